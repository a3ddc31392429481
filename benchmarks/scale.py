"""Past one process: ``sdk label`` images/s with 1 vs N Ray workers, and ``sdk serve`` vs in-process.

    python benchmarks/scale.py                       # tiny bundle (built here), local Ray, PyTriton venv
    python benchmarks/scale.py --bundle B --mode proposal --size 320x320 --images 24

Records (``benchmarks/results/scale.json`` + ``.md``):
* ``inprocess/<mode>`` — one Segmenter (threads 1), images one after another;
* ``label/<mode>/workers=N`` — ``sdk label`` on a local Ray (Ray's own start-up excluded, actor
  start-up included) over ``--images`` images;
* ``serve/<mode>/clients=1`` — one client, request after request, each followed by the same image
  in-process: the per-request overhead is the median of the paired differences (HTTP, Triton,
  PyTriton's IPC, image decoding, RLE encoding);
* ``serve/<mode>/clients=C`` — C concurrent clients against ``--instances`` model instances.
The server runs under ``--serve-python`` (default ``$ZEGFORMER_SERVE_PYTHON``: PyTriton needs numpy<2).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import summarize, synthetic_image, write_results  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, help="bundle to use (default: the tests' tiny bundle, built here)")
    p.add_argument("--mode", default="cropmask")
    p.add_argument("--size", default="96x128", help="image size HxW (default 96x128)")
    p.add_argument("--images", type=int, default=192, help="images to label (default 192)")
    p.add_argument("--workers", default="1,2", help="comma list of Ray worker counts (default 1,2)")
    p.add_argument("--requests", type=int, default=192, help="server requests per measurement (default 192)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    p.add_argument("--instances", type=int, default=2, help="server model instances (default 2)")
    p.add_argument(
        "--serve-python",
        default=os.environ.get("ZEGFORMER_SERVE_PYTHON"),
        help="python of the PyTriton venv (default $ZEGFORMER_SERVE_PYTHON); none skips the server",
    )
    p.add_argument("--skip", default="", help="comma list of parts to skip: label, serve")
    p.add_argument("--out-dir", type=Path, help="results directory (default benchmarks/results)")
    p.add_argument("--json", type=Path, help="JSON path (default <out-dir>/scale.json)")
    return p.parse_args(argv)


def make_images(folder: Path, n: int, size) -> List[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"im{i:03d}.png")
        Image.fromarray(synthetic_image(*size, seed=i)).save(paths[-1])
    return paths


def tiny_bundle(tmp: Path) -> Path:
    from tests.sdk_helpers import export_bundle, tiny_checkpoint

    return export_bundle(tiny_checkpoint(tmp / "tiny.pth"), tmp / "bundle")


def inprocess(bundle: Path, mode: str, paths: Sequence[Path]) -> Dict[str, Any]:
    from sdk import Segmenter
    from sdk.preprocess import load_image

    seg = Segmenter(bundle, backend="onnxruntime", mode=mode, min_size=None, threads=1)
    seg(load_image(paths[0]))  # warm-up
    times = []
    start = time.perf_counter()
    for p in paths:
        t = time.perf_counter()
        seg(load_image(p))
        times.append((time.perf_counter() - t) * 1e3)
    wall = time.perf_counter() - start
    return {"name": f"inprocess/{mode}", "images": len(paths), "images_per_s": len(paths) / wall, **summarize(times)}


def label(bundle: Path, mode: str, paths: Sequence[Path], workers: int, out: Path) -> Dict[str, Any]:
    from sdk.label import Item, run_label

    items = [Item(str(p), p.name, p.stem) for p in paths]
    segmenter = {"bundle_dir": str(bundle), "backend": "onnxruntime", "mode": mode, "min_size": None, "threads": 1}
    s = run_label(items, out, segmenter, workers=workers, batch_size=4, progress=False)
    assert s.labelled == len(paths) and not s.errors, s.line()
    return {
        "name": f"label/{mode}/workers={workers}",
        "images": s.labelled,
        "images_per_s": s.images_per_second,
        "seconds": s.seconds - s.ray_start_seconds,
        "median_ms": 1e3 * (s.seconds - s.ray_start_seconds) / s.labelled,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(bundle: Path, mode: str, paths: Sequence[Path], args) -> List[Dict[str, Any]]:
    from sdk.serve.client import SegmenterClient

    ports = [free_port() for _ in range(3)]
    cmd = [
        args.serve_python,
        "-m",
        "sdk",
        "serve",
        "--bundle",
        str(bundle),
        "--backend",
        "onnxruntime",
        "--mode",
        mode,
        "--min-size",
        "none",
        "--threads",
        "1",
        "--instances",
        str(args.instances),
        "--http-port",
        str(ports[0]),
        "--grpc-port",
        str(ports[1]),
        "--metrics-port",
        str(ports[2]),
    ]
    server = subprocess.Popen(
        cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"127.0.0.1:{ports[0]}"
    data = [p.read_bytes() for p in paths]
    records = []
    try:
        from sdk import Segmenter
        from sdk.preprocess import load_image

        seg = Segmenter(bundle, backend="onnxruntime", mode=mode, min_size=None, threads=1)
        with SegmenterClient(url) as client:
            client.wait_ready(180)
            client.segment(data[0])
            times, local, paired = [], [], []
            for i in range(args.requests):  # alternate, so that the machine's load hits both alike
                t = time.perf_counter()
                client.segment(data[i % len(data)])
                times.append((time.perf_counter() - t) * 1e3)
                t = time.perf_counter()
                seg(load_image(paths[i % len(paths)]))
                local.append((time.perf_counter() - t) * 1e3)
                paired.append(times[-1] - local[-1])
            wall = sum(times) / 1e3
        rec = {
            "name": f"serve/{mode}/clients=1",
            "requests": args.requests,
            "images_per_s": args.requests / wall,
            "instances": args.instances,
            **summarize(times),
        }
        rec["inprocess_median_ms"] = summarize(local)["median_ms"]
        rec["overhead_ms"] = summarize(paired)["median_ms"]  # median of paired (server − in-process)
        records.append(rec)
        records.append(concurrent(url, data, args, mode))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    return records


def concurrent(url: str, data: List[bytes], args, mode: str) -> Dict[str, Any]:
    from sdk.serve.client import SegmenterClient

    per_client = max(1, args.requests // args.clients)
    times: List[float] = []
    lock = threading.Lock()

    def loop(k: int):
        with SegmenterClient(url) as client:
            for j in range(per_client):
                t = time.perf_counter()
                client.segment(data[(k + j) % len(data)])
                with lock:
                    times.append((time.perf_counter() - t) * 1e3)

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(args.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "name": f"serve/{mode}/clients={args.clients}",
        "requests": len(times),
        "instances": args.instances,
        "images_per_s": len(times) / wall,
        **summarize(times),
    }


def markdown(records: List[Dict[str, Any]], args, size) -> str:
    lines = [
        f"# Scale — {args.mode}, {size[0]}×{size[1]} images, onnxruntime CPU, 1 thread per worker/instance",
        "",
        "| what | images/s | ms per image (median; label: wall / images) | overhead ms/request |",
        "|---|---|---|---|",
    ]
    for r in records:
        overhead = f"{r['overhead_ms']:.1f}" if "overhead_ms" in r else ""
        lines.append(f"| {r['name']} | {r['images_per_s']:.1f} | {r['median_ms']:.1f} | {overhead} |")
    lines += [
        "",
        "label: Ray's start-up excluded, actor start-up included; serve: 1 client sequential (overhead = "
        "median of paired server − in-process times) and concurrent clients.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    skip = set(filter(None, args.skip.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="zegformer_scale_"))
    try:
        bundle = args.bundle or tiny_bundle(tmp)
        paths = make_images(tmp / "images", args.images, size)
        records = [inprocess(bundle, args.mode, paths)]
        print(records[-1])
        if "label" not in skip:
            import ray

            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, configure_logging=False, log_to_driver=False)
            for w in (int(v) for v in args.workers.split(",")):
                records.append(label(bundle, args.mode, paths, w, tmp / f"labels_{w}"))
                print(records[-1])
            ray.shutdown()
        if "serve" not in skip and args.serve_python:
            records += serve(bundle, args.mode, paths, args)
            print(records[-2], records[-1], sep="\n")
        path = write_results("scale", records, markdown(records, args, size), args.out_dir, args.json)
        print(f"wrote {path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
