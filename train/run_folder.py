"""What ``train/train.py`` does with an existing run folder (``train.output_dir``).

* ``--resume auto`` (the default): a ``last.pth`` of the *same* config is continued; one of a
  different config is refused with a one-line message (nothing is overwritten). Settings that do
  not change the training (logging, periods, threads, workers, ``solver.max_iter``, data root,
  evaluation) may differ.
* ``--resume none``: start from scratch; earlier logs are kept under a numbered name.
* ``--resume PATH``: continue from that checkpoint.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from .config_io import Config, ConfigError

log = logging.getLogger(__name__)
RUNTIME_KEYS = {
    "train.output_dir",
    "train.progress",
    "train.tensorboard",
    "train.log_period",
    "train.checkpoint_period",
    "train.eval_period",
    "train.threads",
    "train.device",
    "data.num_workers",
    "data.root",
    "solver.max_iter",
}
LOGS = ("train_log.jsonl", "eval_log.jsonl")


def config_differences(a: Config, b: Config) -> List[str]:
    """Dotted keys whose values differ between two configs, ignoring :data:`RUNTIME_KEYS` and ``eval``."""
    out = []
    for section in sorted(set(a) | set(b)):
        if section == "eval":
            continue
        sa, sb = a.get(section) or {}, b.get(section) or {}
        for key in sorted(set(sa) | set(sb)):
            dotted = f"{section}.{key}"
            if dotted not in RUNTIME_KEYS and _norm(sa.get(key)) != _norm(sb.get(key)):
                out.append(dotted)
    return out


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v


def resolve_resume(cfg: Config, resume: Optional[str]) -> Optional[Path]:
    """The checkpoint to continue from, or ``None`` to start fresh; ``ConfigError`` to refuse."""
    out = Path(cfg["train"]["output_dir"])
    if resume not in (None, "auto", "none"):
        return Path(resume)
    last = out / "last.pth"
    if resume == "none":
        keep_old_logs(out)
        return None
    if not last.is_file():
        keep_old_logs(out)
        return None
    from .checkpoint import CheckpointError, read_checkpoint

    try:
        old = read_checkpoint(last).get("train_config")
    except CheckpointError as e:
        raise ConfigError(
            f"{last} cannot be read ({e}); move it away, or pass --resume none to start over (it will be overwritten)"
        ) from e
    diff = config_differences(old, cfg) if isinstance(old, dict) else ["(no config recorded)"]
    if diff:
        shown = ", ".join(diff[:5]) + (" ..." if len(diff) > 5 else "")
        raise ConfigError(
            f"{out} holds a checkpoint of another config (differs in {shown}); use another "
            f"train.output_dir=..., or --resume none to start over there (overwriting it)"
        )
    log.info("resuming from %s (same config; --resume none starts over)", last)
    return last


def keep_old_logs(out: Path) -> None:
    """A fresh run never appends to an earlier run's logs: they become ``train_log.1.jsonl`` etc."""
    for name in LOGS:
        path = out / name
        if not path.is_file():
            continue
        stem, suffix = os.path.splitext(name)
        n = 1
        while (out / f"{stem}.{n}{suffix}").exists():
            n += 1
        path.rename(out / f"{stem}.{n}{suffix}")
        log.warning("starting a new run in %s: the earlier %s is kept as %s.%d%s", out, name, stem, n, suffix)


def missing_data_hint(cfg: Config) -> Optional[str]:
    """The one command that makes the dataset a config needs, when it can be made here."""
    d: Dict[str, Any] = cfg["data"]
    if d.get("dataset") == "synthetic" and d.get("root"):
        return f"python -m train.data.synthetic --out {d['root']}"
    return None
