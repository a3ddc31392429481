"""Train ZegFormer.

    python train/train.py --config configs/synthetic-tiny.yaml [KEY=VALUE ...]
    torchrun --nproc_per_node N train/train.py --config CONFIG.yaml [KEY=VALUE ...]
    python train/train.py --config CONFIG.yaml --resume runs/x/last.pth

Overrides are dotted config keys with YAML values, e.g. ``model.preset=tiny solver.max_iter=100
data.root=/data/synthetic train.output_dir=runs/try``. Checkpoints (``last.pth`` periodically and
on SIGTERM, ``model_final.pth`` at the end) are our checkpoint format with the training state
inside: ``python -m export --checkpoint runs/x/model_final.pth --out BUNDLE`` exports them.
Exit codes: 0 done, 143 stopped by SIGTERM after writing ``last.pth`` (resume with ``--resume``),
1 error.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train.config_io import ConfigError, load_config  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="train/train.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, help="YAML config (see configs/); defaults apply without one")
    ap.add_argument("--resume", help="checkpoint with training state to continue from "
                                     "('auto' = OUTPUT_DIR/last.pth when it exists)")
    ap.add_argument("--eval-only", action="store_true", help="evaluate the initial/resumed weights and exit")
    ap.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (dotted keys)")
    return ap.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    try:
        cfg = load_config(a.config, a.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if a.print_config:
        import yaml

        print(yaml.safe_dump(cfg, sort_keys=False))
        return 0
    from train import distributed as dist
    from train.engine import Trainer

    level = logging.INFO if dist.env_world_size() == 1 or dist.local_rank() == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    resume = a.resume
    if resume == "auto":
        last = Path(cfg["train"]["output_dir"]) / "last.pth"
        resume = last if last.is_file() else None
    try:
        trainer = Trainer(cfg, resume=Path(resume) if resume else None)
        if a.eval_only:
            trainer.evaluate()
            return 0
        return trainer.run()
    finally:
        dist.cleanup()


if __name__ == "__main__":
    sys.exit(main())
