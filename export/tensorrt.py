"""ONNX graphs of a bundle → TensorRT engines (TensorRT 10 and 11), each checked against ONNX Runtime.

Torch-free: needs ``tensorrt``, ``numpy``, ``onnxruntime`` and the SDK's CUDA layer (``sdk.cuda``:
cuda-python or pycuda). The SDK calls :func:`build_engines` to rebuild engines on the machine
that runs them (a plan only runs on the GPU model and TensorRT version it was built with).

Precision comes from the ONNX graph, never from builder flags: every network is *strongly typed*
(``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` on 10.x; TensorRT 11 is strongly typed by
default and removed the weak-typing API — ``BuilderFlag`` FP16/INT8, precision constraints,
per-layer precision/output types, calibrators). FP16 engines are built from the FP16 graph the
exporter writes (``clip_image.fp16.onnx``, overflow-prone ops kept FP32 by explicit casts), INT8
ones from the Q/DQ graph; TF32 is disabled so that "fp32" means float32.

Concurrency: an engine is built with ``num_profiles`` identical optimisation profiles; the SDK
runs at most that many execution contexts at once, each on its own profile (TensorRT requires a
separate profile per concurrently running context), and queues further calls. A timing cache
(outside the bundle, per GPU and TensorRT version) speeds up rebuilds.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from sdk.atomicio import atomic_path, write_bytes_atomic
from sdk.cache import cache_dir

from .errors import ExportError
from .manifest import read_manifest, write_manifest
from .trt_profiles import Shapes, default_profiles, merge_profiles, parse_profile

log = logging.getLogger(__name__)
__all__ = [
    "build_engines",
    "build_engine",
    "require_tensorrt",
    "network_flags",
    "graph_source",
    "TensorRTError",
    "TensorRTUnavailable",
    "default_profiles",
    "merge_profiles",
    "parse_profile",
]
PRECISIONS = ("fp32", "fp16", "int8")
PARITY_TOL = {"fp32": 1e-3, "fp16": 5e-2, "int8": 1e-1}
DEFAULT_WORKSPACE_GB = 4.0


class TensorRTError(ExportError):
    """An engine could not be built or failed its parity check."""


class TensorRTUnavailable(TensorRTError):
    """TensorRT, a CUDA binding or a GPU is missing on this machine."""


def require_tensorrt(device_index: int = 0):
    """``(tensorrt, sdk.cuda.Binding)`` or :class:`TensorRTUnavailable` with a one-line reason."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(
            f"--tensorrt needs TensorRT 10 or 11 (pip install 'zegformer-sdk[tensorrt]'), "
            f"which is not installed here: {e}"
        ) from e
    if trt_major(trt) < 10:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} found; engines need TensorRT >= 10")
    from sdk.cuda import CudaError, open_device

    try:
        dev = open_device(device_index)
    except CudaError as e:
        raise TensorRTUnavailable(f"TensorRT engines need a usable CUDA GPU: {e}") from e
    return trt, dev


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def network_flags(trt) -> int:
    """Network-creation flags: STRONGLY_TYPED on TensorRT 10.x; none on 11+ (strongly typed by default)."""
    if trt_major(trt) >= 11:
        return 0
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    if flag is None:
        raise TensorRTUnavailable(
            f"TensorRT {trt.__version__} lacks strongly typed networks; "
            "install TensorRT >= 10 (pip install 'zegformer-sdk[tensorrt]')"
        )
    return 1 << int(flag)


def graph_source(manifest: Dict[str, Any], graph: str, precision: str) -> Optional[str]:
    """The bundle's ONNX file of ``graph`` in ``precision``, or ``None`` when the bundle has none.

    fp32 is ``graphs[graph]["file"]``; fp16/int8 are the variants ``python -m export --fp16/--int8``
    records in ``graphs[graph]["variants"][precision]["file"]`` (the rule ``sdk.precision.graph_path``
    reads too).
    """
    entry = manifest["graphs"].get(graph) or {}
    if precision == "fp32":
        return entry.get("file")
    variant = (entry.get("variants") or {}).get(precision) or {}
    return variant.get("file")


def _parse(trt, logger, onnx_path: Path):
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    return builder, network, parser


def build_engine(
    trt,
    onnx_path: Path,
    engine_path: Path,
    shapes: Shapes,
    workspace_gb: float = DEFAULT_WORKSPACE_GB,
    cache_path: Optional[Path] = None,
    num_profiles: int = 1,
) -> None:
    """Build and serialise one strongly typed engine from ``onnx_path`` (its precision is the graph's)
    with ``num_profiles`` identical optimisation profiles (one per concurrently running context)."""
    if num_profiles < 1:
        raise TensorRTError(f"num_profiles must be >= 1, got {num_profiles}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder, network, _parser = _parse(trt, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None:
        config.clear_flag(tf32)
    for _ in range(num_profiles):
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    blob = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError(f"TensorRT failed to build an engine from {onnx_path.name} (see its log)")
    write_bytes_atomic(engine_path, bytes(plan))
    if cache_path:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))


def _random_inputs(graph: str, session, shapes: Shapes, vocab_size: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Inputs at the profile's opt shape: an RGB 0..255 image, token ids, or N(0,1) CLIP inputs."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        shape = shapes[inp.name][1]
        if "int" in inp.type:  # start of text, random ids, end of text (the largest id)
            tok = np.zeros(shape, np.int32)
            tok[:, 0] = vocab_size - 2
            tok[:, 1:9] = rng.integers(1, vocab_size - 2, (shape[0], 8))
            tok[:, 9] = vocab_size - 1
            feeds[inp.name] = tok
        elif graph == "proposal":
            feeds[inp.name] = (rng.random(shape) * 255).astype(np.float32)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _bind(context, name: str, ptr: int, engine_path: Path) -> None:
    """``set_tensor_address``, whose ``False`` (unknown name, misaligned or null pointer) must not pass silently."""
    if context.set_tensor_address(name, ptr) is False:  # TensorRT returns a bool
        raise TensorRTError(
            f"TensorRT refused the device address {ptr:#x} for tensor {name} of {engine_path.name} "
            "(unknown tensor, or not 256-byte aligned)"
        )


def run_engine(trt, dev, engine_path: Path, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Run a serialised engine once on host arrays (name-based I/O), through the SDK's CUDA layer."""
    from sdk.cuda import DeviceArray

    with dev.activate():
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            raise TensorRTError(f"TensorRT could not deserialise {engine_path.name}")
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        stream = dev.stream()
        try:
            keep = []
            for name in inputs:
                arr = np.ascontiguousarray(feeds[name], dtype=trt.nptype(engine.get_tensor_dtype(name)))
                if not context.set_input_shape(name, tuple(arr.shape)):
                    raise TensorRTError(f"{engine_path.name} rejects input {name} of shape {arr.shape}")
                keep.append(DeviceArray.from_host(dev, arr, stream))
                _bind(context, name, keep[-1].ptr, engine_path)
            outputs = {}
            for name in names:
                if name not in inputs:
                    out = DeviceArray.empty(
                        dev, tuple(context.get_tensor_shape(name)), trt.nptype(engine.get_tensor_dtype(name))
                    )
                    _bind(context, name, out.ptr, engine_path)
                    outputs[name] = out
            if not context.execute_async_v3(stream):
                raise TensorRTError(f"TensorRT execution of {engine_path.name} failed")
            dev.synchronize(stream)
            return {k: v.copy_to_host(stream) for k, v in outputs.items()}
        finally:
            dev.destroy_stream(stream)


def parity(trt, dev, reference_onnx: Path, engine_path: Path, shapes: Shapes, precision: str, vocab_size: int) -> float:
    """Worst ``max|trt - ort| / max|ort|`` against the *fp32* graph in ONNX Runtime (CPU), at the opt
    shape; raises beyond the precision's tolerance."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(reference_onnx), providers=["CPUExecutionProvider"])
    feeds = _random_inputs(reference_onnx.name.split(".")[0], session, shapes, vocab_size)
    ref = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    got = run_engine(trt, dev, engine_path, feeds)
    worst = 0.0
    for name, r in ref.items():
        g = got[name].astype(np.float32)
        if g.shape != r.shape or not np.isfinite(g).all():
            raise TensorRTError(f"{engine_path.name}: output {name} has shape {g.shape} / non-finite values")
        worst = max(worst, float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-12)))
    if worst > PARITY_TOL[precision]:
        raise TensorRTError(
            f"{engine_path.name} ({precision}) differs from ONNX Runtime fp32 by {worst:.2e} "
            f"(relative; tolerance {PARITY_TOL[precision]:.0e})"
        )
    log.info("%s parity vs ONNX Runtime fp32: rel %.2e (%s)", engine_path.name, worst, precision)
    return worst


def timing_cache_path(trt, device: Dict[str, str]) -> Optional[Path]:
    """The per-GPU timing cache under the one cache root (``sdk.cache``: ``ZEGFORMER_CACHE=off`` disables
    it); ``ZEGFORMER_TRT_CACHE`` names another folder."""
    root = (
        Path(os.environ["ZEGFORMER_TRT_CACHE"]).expanduser()
        if os.environ.get("ZEGFORMER_TRT_CACHE")
        else cache_dir("tensorrt")
    )
    if root is None:
        return None
    tag = re.sub(r"[^A-Za-z0-9.]+", "_", f"{device['gpu']}-sm{device['compute_capability']}-trt{trt.__version__}")
    return root / f"{tag}.timing-cache"


def engine_file(graph: str, precision: str) -> str:
    return f"{graph}.engine" if precision == "fp32" else f"{graph}.{precision}.engine"


def _source(manifest: Dict[str, Any], bundle: Path, graph: str, precision: str) -> Tuple[str, str]:
    """(ONNX file, its precision): the graph in ``precision``, else its fp32 graph (with a warning)."""
    onnx_file = graph_source(manifest, graph, precision)
    if onnx_file is None:
        log.warning("%s has no %s graph of %s; building its engine from the fp32 graph", bundle, precision, graph)
        return manifest["graphs"][graph]["file"], "fp32"
    return onnx_file, precision


def build_engines(
    bundle_dir: Union[str, os.PathLike],
    fp16: bool = False,
    workspace: Optional[float] = None,
    profiles: Optional[Dict[str, Shapes]] = None,
    graphs: Optional[Sequence[str]] = None,
    timing_cache: Optional[Union[str, os.PathLike]] = None,
    precision: Optional[str] = None,
    num_profiles: int = 1,
    device_index: int = 0,
) -> Dict[str, Any]:
    """Build an engine for every graph of a bundle, check each against ONNX Runtime, and record them in
    ``manifest["engines"]`` (and their hashes in ``files``). Returns ``engines``.

    ``precision`` (``fp32``/``fp16``/``int8``; ``fp16=True`` means ``"fp16"``) picks each graph's ONNX
    file of that precision (:func:`graph_source`); a graph without one is built from fp32 and recorded
    so. ``workspace`` is in GiB (default 4); ``profiles`` overrides the default min/opt/max shapes
    (``{graph: {input: [min, opt, max]}}``); ``num_profiles`` is how many contexts of one engine may run
    at once; ``timing_cache`` defaults to a per-GPU file under the cache root's ``tensorrt/`` (``sdk.cache``)
    (``ZEGFORMER_TRT_CACHE`` moves it).
    """
    from sdk.bundle_format import sha256_file

    precision = precision or ("fp16" if fp16 else "fp32")
    if precision not in PRECISIONS:
        raise TensorRTError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    trt, dev = require_tensorrt(device_index)
    bundle = Path(bundle_dir)
    manifest = read_manifest(bundle)
    shapes_all = merge_profiles(default_profiles(manifest), profiles)
    device = dev.info().as_dict()
    cache = Path(timing_cache) if timing_cache else timing_cache_path(trt, device)
    vocab_size = manifest["model"]["config"]["clip"]["vocab_size"]
    engines = dict(manifest.get("engines") or {})
    unknown = sorted(set(graphs or ()) - set(manifest["graphs"]))
    if unknown:
        raise TensorRTError(f"no graph {unknown} in {bundle}; graphs: {sorted(manifest['graphs'])}")
    for graph in graphs or list(manifest["graphs"]):
        onnx_file, actual = _source(manifest, bundle, graph, precision)
        onnx_sha = sha256_file(bundle / onnx_file)
        if manifest["files"].get(onnx_file) != onnx_sha:
            raise TensorRTError(f"{onnx_file} does not match the manifest's sha256; re-export the bundle")
        engine_path = bundle / engine_file(graph, actual)
        log.info("building %s (%s, %d profile(s)) on %s", engine_path.name, actual, num_profiles, device["gpu"])
        with atomic_path(engine_path) as tmp:  # renamed onto engine_path only once parity passed
            build_engine(
                trt, bundle / onnx_file, tmp, shapes_all[graph], workspace or DEFAULT_WORKSPACE_GB, cache, num_profiles
            )
            parity(trt, dev, bundle / manifest["graphs"][graph]["file"], tmp, shapes_all[graph], actual, vocab_size)
        old = (engines.get(graph) or {}).get("file")
        if old and old != engine_path.name and (bundle / old).is_file():
            (bundle / old).unlink()  # one engine per graph: the one just built replaces it
        engines[graph] = {
            "file": engine_path.name,
            "tensorrt": trt.__version__,
            "cuda": device["cuda"],
            "gpu": device["gpu"],
            "compute_capability": device["compute_capability"],
            "precision": actual,
            "num_profiles": int(num_profiles),
            "profiles": {k: dict(zip(("min", "opt", "max"), v)) for k, v in shapes_all[graph].items()},
            "onnx_file": onnx_file,
            "onnx_sha256": onnx_sha,
        }
        manifest["engines"] = engines
        manifest = write_manifest(bundle, manifest)
    return engines
