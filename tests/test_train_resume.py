"""Exact resume: SIGKILL mid-run, resume from the last checkpoint, end with the same weights."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from train.checkpoint import read_checkpoint
from train.data.synthetic import generate

REPO = Path(__file__).resolve().parents[1]
MAX_ITER = 24
COMMON = [
    "data.crop_size=64",
    "data.scales=[0.75,1.0,1.25]",
    "train.threads=1",
    "train.progress=false",
    "train.tensorboard=false",
    "train.eval_period=0",
    "eval.protocols=[]",
    "solver.batch_size=2",
    f"solver.max_iter={MAX_ITER}",
    "train.log_period=1",
    "train.checkpoint_period=3",
    "train.deterministic=true",
    "data.num_workers=0",
]  # dropout stays on: per-step seeds make it exact


def _cmd(data, out, *extra):
    return [
        sys.executable,
        "train/train.py",
        "--config",
        "configs/synthetic-tiny.yaml",
        f"data.root={data}",
        f"train.output_dir={out}",
        *COMMON,
        *extra,
    ]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def _steps(out):
    try:
        return [json.loads(line)["step"] for line in open(out / "train_log.jsonl")]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def _start_and_signal(cmd, out, sig, after_step, need_checkpoint=True, group=False):
    log = open(out.parent / f"{out.name}.stderr", "w")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=log, text=True, start_new_session=group
    )
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if ((out / "last.pth").exists() or not need_checkpoint) and max(_steps(out) or [0]) >= after_step:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    if group:  # as torchrun/SLURM do: the trainer and its data-loader workers
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


def _weights(path):
    return read_checkpoint(path)["model"]


def test_sigkill_then_resume_gives_identical_weights(tmp_path):
    data = generate(tmp_path / "data", num_classes=4, num_unseen=1, num_train=10, num_val=1, size=64, seed=4)
    ref = tmp_path / "ref"
    subprocess.run(_cmd(data, ref), cwd=REPO, env=_env(), check=True, capture_output=True, timeout=300)

    run = tmp_path / "run"
    proc = _start_and_signal(_cmd(data, run), run, signal.SIGKILL, after_step=7)
    assert proc.returncode == -signal.SIGKILL
    killed_at = read_checkpoint(run / "last.pth")["train_state"]["step"]
    assert 0 < killed_at < MAX_ITER
    subprocess.run(
        _cmd(data, run, "--resume", str(run / "last.pth")),
        cwd=REPO,
        env=_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    a, b = _weights(ref / "model_final.pth"), _weights(run / "model_final.pth")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


def test_sigterm_writes_checkpoint_and_exits_143(tmp_path):
    """SIGTERM to the process group (trainer + a loader worker) → checkpoint, exit code 143."""
    data = generate(tmp_path / "data", num_classes=4, num_unseen=1, num_train=6, num_val=1, size=64, seed=5)
    run = tmp_path / "run"
    proc = _start_and_signal(
        _cmd(data, run, "train.checkpoint_period=1000", "data.num_workers=1"),
        run,
        signal.SIGTERM,
        after_step=1,
        need_checkpoint=False,
        group=True,
    )
    assert proc.returncode == 143, (tmp_path / "run.stderr").read_text()[-2000:]
    state = read_checkpoint(run / "last.pth")["train_state"]
    assert state["step"] == max(_steps(run))
