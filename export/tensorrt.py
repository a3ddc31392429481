"""ONNX graphs of a bundle → TensorRT 10 engines, with a parity check against ONNX Runtime.

Torch-free: needs ``tensorrt``, ``numpy``, ``onnxruntime`` and a CUDA binding (cuda-python or
pycuda, imported lazily). The SDK calls ``build_engines(bundle_dir, ...)`` to rebuild engines on
the machine that runs them (a plan only runs on the GPU model and TensorRT version it was built
with). Per graph: one optimisation profile over the dynamic axes; with ``fp16`` the layers that
overflow or lose too much in half precision — normalisations (LayerNorm, GroupNorm), softmax and
the attention-score matmul feeding it, and the reductions of the L2 normalisations — are pinned
to FP32 under ``OBEY_PRECISION_CONSTRAINTS``; TF32 is disabled so that "fp32" means float32.
A timing cache (outside the bundle, per GPU and TensorRT version) speeds up rebuilds.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from .errors import ExportError
from .manifest import read_manifest, write_manifest
from .trt_profiles import Shapes, default_profiles, merge_profiles, parse_profile

log = logging.getLogger(__name__)
__all__ = ["build_engines", "require_tensorrt", "TensorRTError", "TensorRTUnavailable",
           "default_profiles", "merge_profiles", "parse_profile"]
PARITY_TOL = {"fp32": 1e-3, "fp16": 5e-2}
DEFAULT_WORKSPACE_GB = 4.0


class TensorRTError(ExportError):
    """An engine could not be built or failed its parity check."""


class TensorRTUnavailable(TensorRTError):
    """TensorRT, a CUDA binding or a GPU is missing on this machine."""


def require_tensorrt():
    """``(tensorrt module, CUDA helper)``; raises ``TensorRTUnavailable`` with a one-line reason."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(f"--tensorrt needs TensorRT 10 (pip install tensorrt), which is not "
                                  f"installed here: {e}") from e
    if int(trt.__version__.split(".")[0]) < 10:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} found; engines need TensorRT >= 10")
    from .cuda_buffers import load_cuda

    try:
        cuda = load_cuda()
    except (ImportError, RuntimeError) as e:
        raise TensorRTUnavailable(f"TensorRT engines need a usable CUDA GPU: {e}") from e
    return trt, cuda


def _pin(trt, layer) -> bool:
    """Constrain a float layer to FP32 (precision and output types)."""
    outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
    if not outputs or any(t.dtype not in (trt.float32, trt.float16) for t in outputs):
        return False
    layer.precision = trt.float32
    for j in range(layer.num_outputs):
        layer.set_output_type(j, trt.float32)
    if layer.type == trt.LayerType.NORMALIZATION:
        try:
            layer.__class__ = trt.INormalizationLayer
            layer.compute_precision = trt.float32
        except (AttributeError, TypeError):
            pass
    return True


def pin_fp32_layers(trt, network) -> int:
    """Pin normalisations, softmax + the score matmul before it, and L2-norm reductions to FP32."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    producer = {l.get_output(j).name: l for l in layers for j in range(l.num_outputs)}
    consumers: Dict[str, list] = {}
    for l in layers:
        for j in range(l.num_inputs):
            t = l.get_input(j)
            if t is not None:
                consumers.setdefault(t.name, []).append(l)
    T = trt.LayerType
    path_types = (T.ELEMENTWISE, T.SHUFFLE, T.UNARY, T.CAST)
    chosen = {}
    for layer in layers:
        if layer.type not in (T.NORMALIZATION, T.SOFTMAX, T.REDUCE):
            continue
        chosen[layer.name] = layer
        if layer.type == T.SOFTMAX:  # walk back to the q·k matmul through scale/mask ops
            frontier = [layer]
            for _ in range(4):
                frontier = [producer[t.name] for l in frontier for j in range(l.num_inputs)
                            if (t := l.get_input(j)) is not None and t.name in producer]
                frontier = [p for p in frontier if p.type in path_types + (T.MATRIX_MULTIPLY,)]
                for p in frontier:
                    chosen[p.name] = p
                frontier = [p for p in frontier if p.type != T.MATRIX_MULTIPLY]
        if layer.type == T.REDUCE:  # x², Σ, sqrt, x / ‖x‖ around the reduction
            for j in range(layer.num_inputs):
                t = layer.get_input(j)
                if t is not None and t.name in producer and producer[t.name].type in path_types:
                    chosen[producer[t.name].name] = producer[t.name]
            frontier = [layer]
            for _ in range(3):
                frontier = [c for l in frontier for j in range(l.num_outputs)
                            for c in consumers.get(l.get_output(j).name, []) if c.type in path_types]
                for c in frontier:
                    chosen[c.name] = c
    return sum(_pin(trt, l) for l in chosen.values())


def _parse(trt, logger, onnx_path: Path):
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    return builder, network, parser


def build_engine(trt, onnx_path: Path, engine_path: Path, shapes: Shapes, fp16: bool,
                 workspace_gb: float, cache_path: Optional[Path]) -> None:
    """Build and serialise one engine (one profile; FP16 with FP32-pinned layers if asked)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder, network, _parser = _parse(trt, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.clear_flag(trt.BuilderFlag.TF32)
    if fp16:
        if not getattr(builder, "platform_has_fast_fp16", True):
            log.warning("this GPU has no fast FP16; building FP16 anyway")
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        log.info("%s: %d layers pinned to FP32", onnx_path.stem, pin_fp32_layers(trt, network))
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    blob = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError(f"TensorRT failed to build an engine from {onnx_path.name} (see its log)")
    engine_path.write_bytes(bytes(plan))
    if cache_path:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))


def _random_inputs(graph: str, session, shapes: Shapes, vocab_size: int, seed: int = 0
                   ) -> Dict[str, np.ndarray]:
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


def run_engine(trt, cuda, engine_path: Path, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Run a serialised engine once on host arrays (TensorRT 10 name-based I/O)."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    buffers, outputs = [], {}
    stream = cuda.stream()
    try:
        for name in names:
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                arr = np.ascontiguousarray(feeds[name].astype(trt.nptype(engine.get_tensor_dtype(name))))
                context.set_input_shape(name, arr.shape)
                ptr = cuda.malloc(arr.nbytes)
                buffers.append(ptr)
                cuda.to_device(ptr, arr)
                context.set_tensor_address(name, ptr)
        for name in names:
            if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                arr = np.empty(tuple(context.get_tensor_shape(name)), trt.nptype(engine.get_tensor_dtype(name)))
                ptr = cuda.malloc(arr.nbytes)
                buffers.append(ptr)
                context.set_tensor_address(name, ptr)
                outputs[name] = (arr, ptr)
        if not context.execute_async_v3(stream):
            raise TensorRTError(f"TensorRT execution of {engine_path.name} failed")
        cuda.synchronize(stream)
        for arr, ptr in outputs.values():
            cuda.to_host(arr, ptr)
    finally:
        for ptr in buffers:
            cuda.free(ptr)
        cuda.destroy_stream(stream)
    return {k: v[0] for k, v in outputs.items()}


def parity(trt, cuda, onnx_path: Path, engine_path: Path, shapes: Shapes, precision: str,
           vocab_size: int) -> float:
    """Worst ``max|trt - ort| / max|ort|`` over the outputs at the opt shape; raises beyond tolerance."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = _random_inputs(onnx_path.stem, session, shapes, vocab_size)
    ref = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    got = run_engine(trt, cuda, engine_path, feeds)
    worst = 0.0
    for name, r in ref.items():
        g = got[name].astype(np.float32)
        if g.shape != r.shape or not np.isfinite(g).all():
            raise TensorRTError(f"{engine_path.name}: output {name} has shape {g.shape} / non-finite values")
        worst = max(worst, float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-12)))
    if worst > PARITY_TOL[precision]:
        raise TensorRTError(f"{engine_path.name} ({precision}) differs from ONNX Runtime by {worst:.2e} "
                            f"(relative; tolerance {PARITY_TOL[precision]:.0e})")
    log.info("%s parity vs ONNX Runtime: rel %.2e (%s)", engine_path.name, worst, precision)
    return worst


def timing_cache_path(trt, device: Dict[str, str]) -> Path:
    root = Path(os.environ.get("ZEGFORMER_TRT_CACHE", Path.home() / ".cache" / "zegformer-sdk" / "tensorrt"))
    tag = re.sub(r"[^A-Za-z0-9.]+", "_", f"{device['gpu']}-sm{device['compute_capability']}-trt{trt.__version__}")
    return root / f"{tag}.timing-cache"


def build_engines(bundle_dir: Union[str, os.PathLike], fp16: bool = False, workspace: Optional[float] = None,
                  profiles: Optional[Dict[str, Shapes]] = None, graphs: Optional[Sequence[str]] = None,
                  timing_cache: Optional[Union[str, os.PathLike]] = None) -> Dict[str, Any]:
    """Build ``<graph>.engine`` for every graph of a bundle, check each against ONNX Runtime, and
    record them in ``manifest["engines"]`` (and their hashes in ``files``). Returns ``engines``.

    ``workspace`` is in GiB (default 4); ``profiles`` overrides the default min/opt/max shapes
    (``{graph: {input: [min, opt, max]}}``); ``timing_cache`` defaults to a per-GPU file under
    ``~/.cache/zegformer-sdk/tensorrt`` (``ZEGFORMER_TRT_CACHE`` moves it).
    """
    from sdk.bundle_format import sha256_file

    trt, cuda = require_tensorrt()
    bundle = Path(bundle_dir)
    manifest = read_manifest(bundle)
    shapes_all = merge_profiles(default_profiles(manifest), profiles)
    device = cuda.device_info()
    cache = Path(timing_cache) if timing_cache else timing_cache_path(trt, device)
    precision = "fp16" if fp16 else "fp32"
    vocab_size = manifest["model"]["config"]["clip"]["vocab_size"]
    engines = dict(manifest.get("engines") or {})
    unknown = sorted(set(graphs or ()) - set(manifest["graphs"]))
    if unknown:
        raise TensorRTError(f"no graph {unknown} in {bundle}; graphs: {sorted(manifest['graphs'])}")
    for graph in graphs or list(manifest["graphs"]):
        onnx_file = manifest["graphs"][graph]["file"]
        onnx_path = bundle / onnx_file
        onnx_sha = sha256_file(onnx_path)
        if manifest["files"].get(onnx_file) != onnx_sha:
            raise TensorRTError(f"{onnx_file} does not match the manifest's sha256; re-export the bundle")
        engine_path = bundle / f"{graph}.engine"
        tmp = engine_path.with_name(f".{engine_path.name}.tmp")
        log.info("building %s (%s) on %s", engine_path.name, precision, device["gpu"])
        try:
            build_engine(trt, onnx_path, tmp, shapes_all[graph], fp16, workspace or DEFAULT_WORKSPACE_GB, cache)
            parity(trt, cuda, onnx_path, tmp, shapes_all[graph], precision, vocab_size)
            os.replace(tmp, engine_path)
        finally:
            if tmp.exists():
                tmp.unlink()
        engines[graph] = {"file": engine_path.name, "tensorrt": trt.__version__, "cuda": device["cuda"],
                          "gpu": device["gpu"], "compute_capability": device["compute_capability"],
                          "precision": precision,
                          "profiles": {k: dict(zip(("min", "opt", "max"), v)) for k, v in shapes_all[graph].items()},
                          "onnx_sha256": onnx_sha}
        manifest["engines"] = engines
        manifest = write_manifest(bundle, manifest)
    return engines
