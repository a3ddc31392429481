"""Train ZegFormer.

    python train/train.py --config configs/synthetic-tiny.yaml [KEY=VALUE ...]
    torchrun --nproc_per_node N train/train.py --config CONFIG.yaml [KEY=VALUE ...]
    python train/train.py --config CONFIG.yaml --resume runs/x/last.pth

Overrides are dotted config keys with YAML values, e.g. ``model.preset=tiny solver.max_iter=100
data.root=/data/synthetic train.output_dir=runs/try``. Checkpoints (``last.pth`` periodically and
on SIGTERM or Ctrl-C, ``model_final.pth`` at the end) are our checkpoint format with the training state
inside: ``python -m export --checkpoint runs/x/model_final.pth --out BUNDLE`` exports them.
Re-running the same command continues from ``OUTPUT_DIR/last.pth`` (``--resume auto``, the
default); a run folder holding a checkpoint of another config is refused (``--resume none`` starts
over). Exit codes: 0 done, 143/130 stopped by SIGTERM/Ctrl-C after writing ``last.pth`` (run the
same command again to continue), 2 a config, data or run-folder problem (one line), 1 other errors.
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
    ap = argparse.ArgumentParser(
        prog="train/train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", type=Path, help="YAML config (see configs/); defaults apply without one")
    ap.add_argument(
        "--resume",
        default="auto",
        help="auto (default): continue OUTPUT_DIR/last.pth when it is of the same config, refuse "
        "when it is of another; none: start over; or a checkpoint PATH to continue from",
    )
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
    from train.data.errors import DatasetError
    from train.run_folder import missing_data_hint, resolve_resume

    try:
        resume = resolve_resume(cfg, a.resume) if not a.eval_only or a.resume not in ("auto", "none") else None
        trainer = Trainer(cfg, resume=resume)
        if a.eval_only:
            trainer.evaluate()
            return 0
        rc = trainer.run()
        if rc == 0:
            dist.barrier()  # no rank closes its connections while another is still finishing
        return rc
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DatasetError as e:
        hint = missing_data_hint(cfg)
        print(f"error: {' '.join(str(e).split())}" + (f"; make the data with: {hint}" if hint else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (before training started or by a second Ctrl-C): no checkpoint written", file=sys.stderr)
        return 130
    finally:
        dist.cleanup()


if __name__ == "__main__":
    sys.exit(main())
