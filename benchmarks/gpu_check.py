"""Everything that needs a GPU, in one command: ``python benchmarks/gpu_check.py --out DIR``.

On a fresh GPU machine (torch with CUDA, CuPy and nvcc; TensorRT and onnxruntime-gpu optional; no
internet) it: builds the compiled kernels (``setup.py build_ext --inplace``); runs
``tests/test_kernels_cuda.py``; makes the conformance-fixture bundle (as the tests do); runs the
public SDK (``Segmenter(bundle, backend=..., device="cuda")``) with every GPU backend present —
torch on CUDA always, ONNX Runtime CUDA and TensorRT (engines built first) when installed — on the
fixture image and a 640² image; compares each label map with the CPU result (ONNX Runtime) and
the official one; and writes ``gpu_check.json`` + ``gpu_check.md`` (per-stage latency, host↔device
bytes per image, agreement) into DIR. Each step runs in its own process under a time limit, and a
failed step is recorded with its error without losing the others; the whole run stays within
``--budget`` seconds (default 480). Without a GPU it says so in one line and exits 0.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORKERS = ROOT / "benchmarks" / "gpu_workers.py"
LIMITS = {"build": 240, "kernel_tests": 150, "bundle": 200, "cpu": 120, "engines": 240, "pipeline": 120}


def no_gpu_reason() -> Optional[str]:
    """``None`` when a CUDA GPU is usable here, else why not (torch first, then the SDK's CUDA layer)."""
    reasons = []
    try:
        import torch

        if torch.cuda.is_available():
            return None
        reasons.append("torch sees no CUDA device")
    except ImportError:
        reasons.append("torch is not installed")
    try:
        from sdk.cuda import open_device

        open_device(0)
        return None
    except Exception as e:
        reasons.append(str(e).split(" — ")[0])
    return "; ".join(reasons)


class Runner:
    """Runs steps as subprocesses within a total time budget; records each outcome."""

    def __init__(self, out: Path, budget: float):
        self.out, self.deadline, self.steps = out, time.monotonic() + budget, {}

    def run(self, name: str, cmd: List[str], limit: float) -> bool:
        left = self.deadline - time.monotonic() - 5
        if left < 20:
            self.steps[name] = {"status": "skipped", "error": "out of time budget"}
            return False
        timeout = min(limit, left)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                                  env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
            rec = {"status": "ok" if proc.returncode == 0 else "failed", "returncode": proc.returncode,
                   "tail": (proc.stdout + proc.stderr)[-2500:]}
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"") + (e.stderr or b"")
            rec = {"status": "failed", "error": f"timed out after {timeout:.0f} s",
                   "tail": (out.decode(errors="replace") if isinstance(out, bytes) else str(out))[-2500:]}
        except Exception as e:
            rec = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        rec["seconds"] = round(time.monotonic() - t0, 1)
        self.steps[name] = rec
        print(f"gpu_check: {name}: {rec['status']} ({rec['seconds']} s)", flush=True)
        return rec["status"] == "ok"

    def worker(self, name: str, limit: float, *args: str) -> Optional[Dict[str, Any]]:
        tag = name.replace(":", "_")
        ok = self.run(name, [sys.executable, str(WORKERS), *args, "--work", str(self.out / "work"), "--tag", tag],
                      limit)
        path = self.out / "work" / f"{tag}.json"
        return json.loads(path.read_text()) if ok and path.is_file() else None


def gpu_backends() -> Dict[str, str]:
    """The GPU backends present here → why not, for those absent (the torch backend is always tried)."""
    found = {"torch": ""}
    try:
        import onnxruntime as ort

        found["onnxruntime"] = "" if "CUDAExecutionProvider" in ort.get_available_providers() else \
            "onnxruntime-gpu not installed"
    except ImportError:
        found["onnxruntime"] = "onnxruntime not installed"
    try:
        import tensorrt  # noqa: F401

        found["tensorrt"] = ""
    except ImportError:
        found["tensorrt"] = "tensorrt not installed"
    return found


def compare(work: Path, tag: str, cpu_tag: str) -> Dict[str, Any]:
    got, cpu = np.load(work / f"{tag}.npz"), np.load(work / f"{cpu_tag}.npz")
    inputs = np.load(work / "inputs.npz")
    out = {}
    for key in got.files:
        agree = {"vs_cpu": float((got[key] == cpu[key]).mean())}
        if key == "fixture" and "official_fixture" in inputs.files:
            agree["vs_official"] = float((got[key] == inputs["official_fixture"]).mean())
        out[key] = agree
    return out


def markdown(report: Dict[str, Any]) -> str:
    lines = ["# GPU check", "", f"Machine: {report['machine'].get('gpu', '?')}, {report['machine'].get('cpu', '?')} "
             f"({report['machine'].get('cpu_count')} cores); bundle: {report.get('bundle_source', '-')}; "
             f"{report['seconds']:.0f} s in all.", "", "| step | status | seconds | error |", "|---|---|---|---|"]
    for name, s in report["steps"].items():
        err = (s.get("error") or (s.get("tail", "").strip().splitlines() or [""])[-1] if s["status"] != "ok" else "")
        lines.append(f"| {name} | {s['status']} | {s.get('seconds', '-')} | {str(err)[:160].replace('|', '/')} |")
    lines += ["", "| backend | image | total ms | stages (median ms) | H→D / D→H bytes | agreement vs CPU | "
              "vs official |", "|---|---|---|---|---|---|---|"]
    for tag, rec in report["pipelines"].items():
        for key, img in rec["images"].items():
            st = img["stages_ms"]
            stages = ", ".join(f"{k} {v:.1f}" for k, v in st.items() if k != "total")
            tr = img.get("transfers") or {}
            bytes_ = f"{tr['h2d_bytes']:,} / {tr['d2h_bytes']:,}" if "h2d_bytes" in tr else tr.get("error", "-")
            agree = (report["agreement"].get(tag) or {}).get(key, {})
            lines.append(f"| {tag} | {key} {img['size'][0]}×{img['size'][1]} | {st.get('total', 0):.1f} | {stages} | "
                         f"{bytes_} | {agree.get('vs_cpu', float('nan')):.4f} | {agree.get('vs_official', float('nan')):.4f} |")
    lines += ["", "Backends not run: " + (", ".join(f"{b} ({r})" for b, r in report["absent"].items()) or "none")]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="directory for gpu_check.json / gpu_check.md")
    p.add_argument("--budget", type=float, default=480, help="total seconds (default 480 = 8 min)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per image after a warm-up (default 3)")
    p.add_argument("--skip-build", action="store_true", help="use the kernels already built")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # "cpu": rehearse the steps without a GPU
    args = p.parse_args(argv)
    reason = no_gpu_reason() if args.device != "cpu" else None
    if reason is not None:
        print(f"gpu_check: no CUDA GPU here ({reason}); nothing to check.")
        return 0
    from benchmarks.common import machine

    t0 = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    r = Runner(args.out, args.budget)
    if not args.skip_build:
        r.run("build", [sys.executable, "setup.py", "build_ext", "--inplace"], LIMITS["build"])
    r.run("kernel_tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_kernels_cuda.py"], LIMITS["kernel_tests"])
    made = r.worker("bundle", LIMITS["bundle"], "bundle") or {}
    bundle, pipelines, agreement = made.get("bundle"), {}, {}
    present = gpu_backends()
    absent = {b: why for b, why in present.items() if why}
    rep = ["--repeats", str(args.repeats)]
    if bundle and r.worker("cpu", LIMITS["cpu"], "pipeline", "--backend", "onnxruntime", "--device", "cpu",
                           "--bundle", bundle, *rep):
        pipelines["cpu"] = json.loads((args.out / "work" / "cpu.json").read_text())
        for backend in [b for b, why in present.items() if not why]:
            target = bundle
            if backend == "tensorrt":
                built = r.worker("engines", LIMITS["engines"], "engines", "--bundle", bundle)
                if not built:
                    continue
                target = built["bundle"]
            rec = r.worker(f"gpu:{backend}", LIMITS["pipeline"], "pipeline", "--backend", backend, "--device", args.device,
                           "--bundle", target, *rep)
            if rec:
                pipelines[backend] = rec
                agreement[backend] = compare(args.out / "work", f"gpu_{backend}", "cpu")
    report = {"machine": machine(), "bundle_source": made.get("source"), "steps": r.steps, "pipelines": pipelines,
              "agreement": agreement, "absent": absent, "seconds": time.monotonic() - t0}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "gpu_check.md").write_text(markdown(report))
    failed = [n for n, s in r.steps.items() if s["status"] != "ok"]
    print(f"gpu_check: wrote {args.out / 'gpu_check.md'}; " + (f"failed/skipped: {failed}" if failed else "all ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
