"""Everything that needs a GPU, in one command, on a GPU machine without internet (``docs/gpu.md``).

Here (with internet)::

    python benchmarks/gpu_check.py --prepare gpu_carry      # wheels the GPU machine lacks + the fixture, < 64 MiB
    python benchmarks/gpu_check.py --rehearse gpu_carry     # CI: checks the folder and the plan, runs nothing

There (copy the checkout and ``gpu_carry/`` along; Python 3.12 with torch/CUDA, CuPy, nvcc)::

    python3 benchmarks/gpu_check.py --from gpu_carry --out gpu_out

``--from`` installs the carried wheels whose module is missing there (``pip install --no-index
--no-deps --target``, a folder put *in front of* the caller's ``PYTHONPATH``, never replacing it),
then runs the steps of ``STEPS`` in order of value, each in its own process under its budget (the
budgets sum to at most 6 minutes; time a step leaves unused goes to the next ones), and rewrites
``OUT/gpu_check.json`` + ``OUT/gpu_check.md`` after every step, so a run cut short still reports
what it measured. Without a GPU it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORKERS = ROOT / "benchmarks" / "gpu_workers.py"
from benchmarks.gpu_carry import (  # noqa: E402,F401
    BUDGET_LIMIT,
    CARRY_LIMIT,
    REFERENCE,
    REFERENCE_FILES,
    WHEELS,
    check_folder,
    folder_bytes,
    install,
    pip_install_target,
    pip_platform_args,
    prepare,
)

# (name, budget in seconds, what it does) in order of value; the sum is checked against BUDGET_LIMIT
STEPS: Tuple[Tuple[str, float, str], ...] = (
    ("install", 10, "pip install --no-index --no-deps --target the carried wheels whose module is missing"),
    ("build", 75, "setup.py build_ext --inplace: C++ and CUDA kernels, for this GPU's architecture only"),
    ("kernel_tests", 35, "pytest tests/test_kernels_cuda.py: CUDA kernels vs CPU kernels and torch"),
    ("cuda_layer", 15, "sdk.cuda through cuda-python on the real driver: copies, streams, foreign arrays"),
    ("bundle", 100, "the fixture bundle: recipe weights -> convert -> export (fp32 ONNX, trace 320x320)"),
    ("gpu:torch", 45, "Segmenter(backend='torch', device='cuda'): fixture + 640x640, stages, H<->D bytes"),
    ("cpu", 30, "Segmenter(backend='onnxruntime') on the CPU: the labels the GPU runs are compared with"),
    ("gpu:onnxruntime", 20, "ONNX Runtime CUDA (only with onnxruntime-gpu)"),
    ("gpu:tensorrt", 30, "TensorRT engines built, then the pipeline (only with tensorrt; gets what is left)"),
)


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
    """Runs steps as subprocesses within a total time budget; records each outcome and calls
    ``after_step`` (the report writer) after every one."""

    def __init__(
        self,
        out: Path,
        budget: float,
        env: Optional[Dict[str, str]] = None,
        after_step: Optional[Callable[[], None]] = None,
        work: Optional[Path] = None,
    ):
        self.out, self.deadline, self.steps = out, time.monotonic() + budget, {}
        self.work = work or out / "work"  # bundles and label maps: large, kept out of OUT when OUT travels back
        self.env, self.after_step, self.slack = env or dict(os.environ), after_step, 0.0

    def run(self, name: str, cmd: List[str], limit: float) -> bool:
        left = self.deadline - time.monotonic() - 2
        if left < 10:
            return self.record(name, {"status": "skipped", "error": "out of time budget"})
        timeout = min(limit + self.slack, left)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=self.env)
            rec = {
                "status": "ok" if proc.returncode == 0 else "failed",
                "returncode": proc.returncode,
                "tail": (proc.stdout + proc.stderr)[-2500:],
            }
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"") + (e.stderr or b"")
            rec = {
                "status": "failed",
                "error": f"timed out after {timeout:.0f} s",
                "tail": (out.decode(errors="replace") if isinstance(out, bytes) else str(out))[-2500:],
            }
        except Exception as e:
            rec = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        rec["seconds"] = round(time.monotonic() - t0, 1)
        self.slack = max(0.0, self.slack + limit - rec["seconds"])  # unused time goes to the next steps
        return self.record(name, rec)

    def record(self, name: str, rec: Dict[str, Any]) -> bool:
        self.steps[name] = rec
        print(f"gpu_check: {name}: {rec['status']} ({rec.get('seconds', 0)} s)", flush=True)
        if self.after_step:
            self.after_step()
        return rec["status"] == "ok"

    def worker(self, name: str, limit: float, *args: str) -> Optional[Dict[str, Any]]:
        tag = name.replace(":", "_")
        ok = self.run(name, [sys.executable, str(WORKERS), *args, "--work", str(self.work), "--tag", tag], limit)
        path = self.work / f"{tag}.json"
        return json.loads(path.read_text()) if ok and path.is_file() else None


def budget_problems() -> List[str]:
    total = sum(b for _, b, _ in STEPS)
    return [] if total <= BUDGET_LIMIT else [f"step budgets sum to {total:.0f} s > {BUDGET_LIMIT:.0f} s"]


def rehearse(folder: Path) -> int:
    """CI, no GPU: prepare the folder if needed, check it, dry-install its wheels for the GPU machine's
    Python (``pip install --target`` with its platform tags), check the budgets, print the plan."""
    if not (Path(folder) / "carry.json").is_file():
        prepare(folder)
    problems = check_folder(folder) + budget_problems()
    with tempfile.TemporaryDirectory() as tmp:
        wheels = sorted(str(p) for p in (Path(folder) / "wheels").glob("*.whl"))
        proc = pip_install_target(wheels, Path(tmp), *pip_platform_args())
        if proc.returncode != 0:
            problems.append("pip install --target failed: " + " ".join(proc.stderr.split())[-300:])
    print(
        f"gpu_check: rehearsal: {folder} holds {folder_bytes(folder) / 2**20:.1f} MiB "
        f"(limit {CARRY_LIMIT / 2**20:.0f}); steps budget {sum(b for _, b, _ in STEPS):.0f} s "
        f"(limit {BUDGET_LIMIT:.0f}); on the GPU machine it would run:"
    )
    for name, budget, what in STEPS:
        print(f"  {name:16s} {budget:4.0f} s  {what}")
    for p in problems:
        print(f"gpu_check: problem: {p}")
    return 1 if problems else 0


# ----------------------------------------------------------------------------------- running there
def step_env(folder: Path, site: Path) -> Dict[str, str]:
    """The steps' environment: the checkout and the carried site *before* the caller's PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(site)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("ZEGFORMER_REFERENCE", str(Path(folder).resolve() / "reference"))
    try:
        import torch

        major, minor = torch.cuda.get_device_capability(0)
        env.setdefault("ZEGFORMER_CUDA_ARCHS", f"{major}{minor}")  # one architecture: a 4x shorter build
    except Exception:
        pass
    return env


def gpu_backends() -> Dict[str, str]:
    """The GPU backends present here → why not, for those absent (the torch backend is always tried)."""
    found = {"torch": ""}
    try:
        import onnxruntime as ort

        found["onnxruntime"] = (
            "" if "CUDAExecutionProvider" in ort.get_available_providers() else "onnxruntime-gpu not installed"
        )
    except ImportError:
        found["onnxruntime"] = "onnxruntime not installed"
    found["tensorrt"] = "" if importlib.util.find_spec("tensorrt") else "tensorrt not installed"
    return found


def compare(work: Path, tag: str, cpu_tag: str) -> Dict[str, Any]:
    """Label agreement of run ``tag`` with the CPU run and (fixture) the official labels."""
    import numpy as np

    got = np.load(work / f"{tag}.npz")
    cpu = np.load(work / f"{cpu_tag}.npz") if (work / f"{cpu_tag}.npz").is_file() else None
    inputs = np.load(work / "inputs.npz")
    out = {}
    for key in got.files:
        agree = {}
        if cpu is not None and key in cpu.files and tag != cpu_tag:
            agree["vs_cpu"] = float((got[key] == cpu[key]).mean())
        if key == "fixture" and "official_fixture" in inputs.files:
            agree["vs_official"] = float((got[key] == inputs["official_fixture"]).mean())
        out[key] = agree
    return out


def markdown(report: Dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# GPU check",
        "",
        f"Machine: {m.get('gpu', '?')}, {m.get('cpu', '?')} ({m.get('cpu_count')} cores), "
        f"torch {m.get('torch', '-')}; bundle: {report.get('bundle_source', '-')}; "
        f"{report['seconds']:.0f} s in all.",
        "",
        "| step | status | seconds | error |",
        "|---|---|---|---|",
    ]
    for name, s in report["steps"].items():
        err = s.get("error") or (s.get("tail", "").strip().splitlines() or [""])[-1] if s["status"] != "ok" else ""
        lines.append(f"| {name} | {s['status']} | {s.get('seconds', '-')} | {str(err)[:160].replace('|', '/')} |")
    lines += [
        "",
        "| backend | image | total ms | stages (median ms) | H→D / D→H bytes | agreement vs CPU | vs official |",
        "|---|---|---|---|---|---|---|",
    ]
    for tag, rec in report["pipelines"].items():
        for key, img in rec["images"].items():
            st = img["stages_ms"]
            stages = ", ".join(f"{k} {v:.1f}" for k, v in st.items() if k != "total")
            tr = img.get("transfers") or {}
            bytes_ = f"{tr['h2d_bytes']:,} / {tr['d2h_bytes']:,}" if "h2d_bytes" in tr else tr.get("error", "-")
            agree = (report["agreement"].get(tag) or {}).get(key, {})
            lines.append(
                f"| {tag} | {key} {img['size'][0]}×{img['size'][1]} | {st.get('total', 0):.1f} | {stages} | "
                f"{bytes_} | {agree.get('vs_cpu', float('nan')):.4f} | "
                f"{agree.get('vs_official', float('nan')):.4f} |"
            )
    extra = report.get("cuda_layer")
    if extra:
        lines += ["", "CUDA layer: " + ", ".join(f"{k} {v}" for k, v in extra.items())]
    lines += ["", "Backends not run: " + (", ".join(f"{b} ({r})" for b, r in report["absent"].items()) or "none")]
    return "\n".join(lines) + "\n"


class Report:
    """The result files, rewritten after every step (a run cut short still reports what it measured)."""

    def __init__(self, out: Path, work: Path):
        from benchmarks.common import machine

        self.out, self.work, self.t0 = out, work, time.monotonic()
        self.data: Dict[str, Any] = {
            "machine": machine(),
            "bundle_source": None,
            "steps": {},
            "pipelines": {},
            "agreement": {},
            "absent": {},
            "budgets": {n: b for n, b, _ in STEPS},
        }

    def write(self) -> None:
        self.data["seconds"] = time.monotonic() - self.t0
        work = self.work
        self.data["agreement"] = {
            tag: compare(work, f"gpu_{tag}" if tag != "cpu" else "cpu", "cpu") for tag in self.data["pipelines"]
        }
        tmp = self.out / ".gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.out / "gpu_check.json")
        (self.out / ".gpu_check.md.tmp").write_text(markdown(self.data))
        os.replace(self.out / ".gpu_check.md.tmp", self.out / "gpu_check.md")


def run_all(
    folder: Optional[Path],
    out: Path,
    work: Path,
    repeats: int,
    skip_build: bool,
    device: str = "cuda",
    scale: float = 1.0,
) -> int:
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, work)
    budgets = {n: b * scale for n, b, _ in STEPS}
    site = Path(tempfile.gettempdir()) / "zegformer-gpu-site"
    env = step_env(folder, site) if folder else dict(os.environ)
    r = Runner(out, sum(budgets.values()), env, after_step=report.write, work=work)
    report.data["steps"] = r.steps
    if folder:
        t0 = time.monotonic()
        try:
            rec = install(folder, site)
        except Exception as e:
            rec = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        r.record("install", {**rec, "seconds": round(time.monotonic() - t0, 1)})
    if not skip_build:
        r.run("build", [sys.executable, "setup.py", "build_ext", "--inplace"], budgets["build"])
    r.run(
        "kernel_tests",
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "tests/test_kernels_cuda.py"],
        budgets["kernel_tests"],
    )
    report.data["cuda_layer"] = r.worker("cuda_layer", budgets["cuda_layer"], "cuda_layer")
    made = r.worker("bundle", budgets["bundle"], "bundle") or {}
    report.data["bundle_source"] = made.get("source")
    present = gpu_backends()
    report.data["absent"] = {b: why for b, why in present.items() if why}
    bundle, rep = made.get("bundle"), ["--repeats", str(repeats)]
    pipelines = report.data["pipelines"]
    for name in ("gpu:torch", "cpu", "gpu:onnxruntime", "gpu:tensorrt"):
        backend = "onnxruntime" if name == "cpu" else name.split(":")[1]
        if not bundle or (name != "cpu" and present[backend]):
            continue
        target = bundle
        if backend == "tensorrt":
            built = r.worker("engines", budgets[name] * 0.7, "engines", "--bundle", bundle)
            if not built:
                continue
            target = built["bundle"]
        args = ["pipeline", "--backend", backend, "--device", "cpu" if name == "cpu" else device, "--bundle", target]
        rec = r.worker(name, budgets[name], *args, *(["--repeats", "0"] if name == "cpu" else rep))
        if rec:
            pipelines[name.split(":")[-1]] = rec
            report.write()
    report.write()
    failed = [n for n, s in r.steps.items() if s["status"] != "ok"]
    print(f"gpu_check: wrote {out / 'gpu_check.md'}; " + (f"failed/skipped: {failed}" if failed else "all ok"))
    return 1 if failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--prepare", type=Path, metavar="DIR", help="here: download the wheels, copy the fixture")
    what.add_argument(
        "--rehearse",
        type=Path,
        metavar="DIR",
        help="here, no GPU: prepare DIR if needed, check it and the step budgets, print the plan",
    )
    p.add_argument("--from", dest="folder", type=Path, metavar="DIR", help="there: the prepared folder")
    p.add_argument("--out", type=Path, help="there: directory for gpu_check.json / gpu_check.md")
    p.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "zegformer-gpu-work",
        help="there: scratch for the bundle, engines and label maps (default: the temp dir, not OUT)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs per image after a warm-up (default 3)")
    p.add_argument("--skip-build", action="store_true", help="use the kernels already built")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # "cpu": the steps' plumbing, no GPU
    p.add_argument("--budget-scale", type=float, default=1.0, help=argparse.SUPPRESS)  # slow rehearsal machines
    args = p.parse_args(argv)
    if args.prepare or args.rehearse:
        try:
            if args.rehearse:
                return rehearse(args.rehearse)
            manifest = prepare(args.prepare)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            print(f"gpu_check: prepare failed: {' '.join(str(e).split())}")
            return 2
        problems = check_folder(args.prepare)
        print(
            f"gpu_check: prepared {args.prepare}: {len(manifest['wheels'])} wheels + fixture, "
            f"{manifest['bytes'] / 2**20:.1f} MiB (limit {CARRY_LIMIT / 2**20:.0f}); carry it with the checkout"
            + "".join(f"\ngpu_check: problem: {q}" for q in problems)
        )
        return 1 if problems else 0
    if args.out is None:
        p.error("--out DIR is needed to run the checks (or --prepare / --rehearse DIR)")
    problems = check_folder(args.folder) if args.folder else []
    if problems:
        print(f"gpu_check: {args.folder}: {'; '.join(problems)}")
        return 2
    reason = no_gpu_reason() if args.device != "cpu" else None
    if reason is not None:
        print(f"gpu_check: no CUDA GPU here ({reason}); nothing to check.")
        return 0
    return run_all(args.folder, args.out, args.work, args.repeats, args.skip_build, args.device, args.budget_scale)


if __name__ == "__main__":
    sys.exit(main())
