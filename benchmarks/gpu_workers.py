"""The pieces of ``gpu_check.py``, each run in its own process (a crash or a hang loses only itself).

``python benchmarks/gpu_workers.py bundle --work DIR`` writes the fixture bundle and the inputs;
``... pipeline --work DIR --backend B --device D --bundle DIR --tag T`` runs the public SDK on the
inputs and writes ``T.json`` (timings, info, host↔device bytes) and ``T.npz`` (label maps);
``... engines --work DIR`` copies the bundle and builds its TensorRT engines;
``... cuda_layer --work DIR`` exercises ``sdk.cuda`` (cuda-python) against the real driver.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REFERENCE = Path(os.environ.get("ZEGFORMER_REFERENCE", ROOT.parent / "shared" / "reference"))


def make_bundle(work: Path) -> Dict[str, Any]:
    """The conformance fixture bundle (official recipe weights → convert → export), as the tests make it;
    without ``shared/reference``, the tests' tiny model. Also the two input images and text features."""
    import torch
    from PIL import Image

    from export.bundle import ExportOptions, export_bundle

    bundle, tmp = work / "bundle", work / "weights"
    tmp.mkdir(parents=True, exist_ok=True)
    if (REFERENCE / "reference_r101_vit16_cocostuff.npz").is_file():
        from tests.recipe import official_state_dict
        from train.convert_official import convert

        official, ours = tmp / "official.pth", tmp / "ours.pth"
        torch.save({"model": official_state_dict(REFERENCE)}, official)
        convert(official, ours, dataset="coco-stuff")
        official.unlink()
        arrays = dict(np.load(REFERENCE / "reference_r101_vit16_cocostuff.npz"))
        names = json.loads((REFERENCE / "cocostuff_all_classnames.json").read_text())
        image, tf, tfc = arrays["image"], arrays["text_features_test"], arrays["text_features_test_clip"]
        official_labels, source, trace = arrays["sem_seg_argmax"], "conformance fixture (R101 + ViT-B/16)", (320, 320)
    else:
        from tests.sdk_helpers import NAMES, block_image, random_text_features, tiny_checkpoint

        ours = tiny_checkpoint(tmp / "tiny.pth")
        names, image = NAMES, block_image(256, 320)
        tf, tfc = random_text_features(len(NAMES), 32)
        official_labels, source, trace = None, f"tiny model ({REFERENCE} absent)", (64, 96)
    classes = tmp / "one_class.txt"
    classes.write_text("sports ball\n")
    export_bundle(ours, bundle, ExportOptions(vocabs=[str(classes)], image_size=trace, progress=False, force=True))
    big = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((640, 640), Image.BILINEAR))
    extra = {} if official_labels is None else {"official_fixture": official_labels}
    np.savez(work / "inputs.npz", fixture=image, img640=big, text_features=tf, text_features_clip=tfc, **extra)
    (work / "names.json").write_text(json.dumps(list(names)))
    return {"bundle": str(bundle), "source": source}


def transfer_bytes(fn) -> Dict[str, Any]:
    """Host↔device bytes of one call, from the CUDA activity trace (CUPTI, via torch.profiler):
    every library's copies in this process count — torch, CuPy, TensorRT, ONNX Runtime, our kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text()).get("traceEvents", [])
    out = {"h2d_bytes": 0, "d2h_bytes": 0, "d2d_bytes": 0, "copies": 0}
    for e in events:
        if e.get("cat") != "gpu_memcpy":
            continue
        n = int((e.get("args") or {}).get("bytes", 0))
        key = "h2d_bytes" if "HtoD" in e["name"] else "d2h_bytes" if "DtoH" in e["name"] else "d2d_bytes"
        out[key] += n
        out["copies"] += 1
    return out


def run_pipeline(work: Path, backend: str, device: str, bundle: str, tag: str, repeats: int) -> Dict[str, Any]:
    from sdk import Segmenter

    inputs = dict(np.load(work / "inputs.npz"))
    names = json.loads((work / "names.json").read_text())
    t0 = time.perf_counter()
    seg = Segmenter(bundle, backend=backend, device=device, min_size=None, cache_dir=False)
    seg.set_vocabulary(names, text_features=inputs["text_features"], text_features_clip=inputs["text_features_clip"])
    record: Dict[str, Any] = {"backend": backend, "device": device, "load_s": time.perf_counter() - t0, "images": {}}
    labels = {}
    for key in ("fixture", "img640"):
        image = inputs[key]
        first = seg(image)  # warm-up (engines, kernels, cuDNN autotuning)
        runs = [seg(image) for _ in range(repeats)] or [first]  # repeats 0: the labels (CPU reference) only
        stages = sorted({s for r in runs for s in r.timings})
        entry: Dict[str, Any] = {
            "size": list(image.shape[:2]),
            "info": first.info,
            "stages_ms": {s: statistics.median(r.timings.get(s, 0.0) for r in runs) for s in stages},
        }
        if device != "cpu":
            try:
                entry["transfers"] = transfer_bytes(functools.partial(seg, image))
            except Exception as e:  # no torch / no CUPTI: say so, keep the timings
                entry["transfers"] = {"error": f"{type(e).__name__}: {e}"}
        labels[key] = runs[-1].label_map
        record["images"][key] = entry
    np.savez_compressed(work / f"{tag}.npz", **labels)
    return record


def build_engines(work: Path, bundle: str) -> Dict[str, Any]:
    from export.tensorrt import build_engines as build

    target = work / "trt_bundle"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(bundle, target)
    t0 = time.perf_counter()
    engines = build(target)
    return {
        "bundle": str(target),
        "build_s": time.perf_counter() - t0,
        "engines": {g: {k: e.get(k) for k in ("file", "precision", "tensorrt", "gpu")} for g, e in engines.items()},
    }


def cuda_layer() -> Dict[str, Any]:
    """``sdk.cuda`` through cuda-python on the real driver: a round trip of 16 MiB through device memory on
    a stream, a device-to-device copy, and a torch tensor read through ``foreign_array`` (zero copy)."""
    import torch

    from sdk.cuda import DeviceArray, foreign_array, open_device

    dev = open_device(0, binding="cuda-python")
    host = np.random.default_rng(0).standard_normal((1024, 4096)).astype(np.float32)
    with dev.activate():
        stream = dev.stream()
        t0 = time.perf_counter()
        arr = DeviceArray.from_host(dev, host, stream)
        h2d = time.perf_counter() - t0
        twin = DeviceArray.empty(dev, host.shape, host.dtype)
        dev.dtod(twin.ptr, arr.ptr, arr.nbytes, stream)
        dev.synchronize(stream)
        back = twin.copy_to_host(stream)
        dev.destroy_stream(stream)
    if not np.array_equal(back, host):
        raise AssertionError("device round trip changed the data")
    t = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4)
    view = foreign_array(t)
    if view.ptr != t.data_ptr() or tuple(view.shape) != (3, 4):
        raise AssertionError(f"foreign_array({t.shape}) read {view.ptr:#x} {view.shape}")
    return {
        "binding": dev.describe(),
        "h2d_GBps": round(host.nbytes / h2d / 1e9, 2),
        "round_trip": "equal",
        "foreign_array": "zero-copy view of a torch tensor",
    }


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("bundle", "pipeline", "engines", "cuda_layer"))
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bundle", default=None)
    p.add_argument("--tag", default=None)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.step == "bundle":
        result = make_bundle(a.work)
    elif a.step == "cuda_layer":
        result = cuda_layer()
    elif a.step == "engines":
        result = build_engines(a.work, a.bundle)
    else:
        result = run_pipeline(a.work, a.backend, a.device, a.bundle, a.tag, a.repeats)
    out = a.work / f"{a.tag or a.step}.json"
    out.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
