"""Training configuration: YAML files with ``_base_`` inheritance, ``KEY=VALUE`` overrides.

A config is a nested dict with the sections of :data:`DEFAULTS`. The ``model`` section is a
preset name (``train.config.preset``) plus overrides of ``ModelConfig`` fields (``clip`` nested).
Overrides use dotted keys and YAML values: ``solver.max_iter=100 model.num_queries=20
data.scales=[0.5,1.0]``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import yaml

from .config import ModelConfig, preset
from .config_types import check_types
from .losses import LossConfig
from .solver import SolverConfig

Config = Dict[str, Any]

DEFAULTS: Config = {
    "model": {"preset": "r101-vit16"},
    "init": {
        "checkpoint": None,  # our checkpoint to start from (weights only; not a resume)
        "backbone": None,  # torchvision/detectron2 ResNet weights file (ImageNet pre-training)
        "clip": None,  # CLIP weights: OpenAI state-dict/TorchScript file or open_clip tag ("openai")
    },
    "data": {
        "dataset": "synthetic",  # coco-stuff | voc | ade-847 | folder | synthetic (= folder)
        "root": None,
        "train_split": "train",
        "val_split": "val",
        "crop_size": 640,
        "scales": [x / 10 for x in range(5, 16)],
        "max_size": 2560,
        "single_category_max_area": 1.0,
        "color_aug": True,
        "flip": True,
        "num_workers": 0,
    },
    "solver": {
        f.name: (list(f.default) if isinstance(f.default, tuple) else f.default)
        for f in dataclasses.fields(SolverConfig)
    },
    "loss": {f.name: f.default for f in dataclasses.fields(LossConfig)},
    "train": {
        "output_dir": "runs/default",
        "seed": 0,
        "device": "auto",  # auto | cpu | cuda
        "amp": "auto",  # auto (on for CUDA) | true | false
        "amp_dtype": "float16",  # float16 | bfloat16 (CUDA)
        "cpu_bf16": False,  # bfloat16 autocast on the CPU
        "deterministic": False,  # torch.use_deterministic_algorithms + single-threaded-safe settings
        "threads": 0,  # torch intra-op threads (0 = torch's default)
        # frozen: the backbone's BatchNorm keeps its loaded statistics (official, ImageNet backbone);
        # train: learns them (a backbone trained from scratch, where frozen means no normalisation)
        "backbone_norm": "frozen",
        "log_period": 20,
        "checkpoint_period": 1000,
        "eval_period": 5000,  # 0 = only at the end
        "max_nonfinite": 5,  # stop after this many consecutive non-finite losses
        "tensorboard": True,
        "progress": True,
    },
    "eval": {
        "protocols": ["seen", "gzss"],  # seen: seen classes only (official training-time test);
        # gzss: all classes, generalized zero-shot
        "mode": "proposal",  # proposal | cropmask (periodic evaluation during training)
        "min_size": 640,  # test-time shortest side (0 = keep the input size)
        "max_size": 2560,
        "max_images": 0,  # 0 = the whole split
        "calibrate": None,  # None = the model config's gzero_calibrate
    },
}


class ConfigError(ValueError):
    """A config file or override names an unknown key or has a bad value."""


def _merge(base: Config, upd: Config, where: str = "") -> Config:
    out = copy.deepcopy(base)
    for k, v in (upd or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, f"{where}{k}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_yaml(path: Path) -> Config:
    """A YAML config, with ``_base_`` (a path relative to the file) merged underneath."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {' '.join(str(e).split())}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections")
    base = data.pop("_base_", None)
    if base:
        data = _merge(load_yaml(path.parent / base), data)
    return data


def apply_override(cfg: Config, item: str) -> None:
    """Apply one ``dotted.key=value`` override in place (value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. solver.max_iter=100)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({' '.join(str(e).split())})") from e
    parts = key.strip().split(".")
    node = cfg
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section")
    node[parts[-1]] = value


def validate(cfg: Config) -> None:
    """Unknown sections or keys are errors (the model section is checked by :func:`model_config`)."""
    for section, values in cfg.items():
        if section not in DEFAULTS:
            raise ConfigError(f"unknown config section {section!r}; sections: {sorted(DEFAULTS)}")
        if section == "model" or not isinstance(values, dict):
            continue
        unknown = sorted(set(values) - set(DEFAULTS[section]))
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in section {section!r}; valid: {sorted(DEFAULTS[section])}")
    check_types(cfg, DEFAULTS, {"solver": SolverConfig, "loss": LossConfig, "model": ModelConfig}, ConfigError)
    model_config(cfg)


def load_config(path: Optional[Path] = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults ← YAML file ← overrides; validated."""
    cfg = _merge(DEFAULTS, load_yaml(path) if path else {})
    for item in overrides:
        apply_override(cfg, item)
    validate(cfg)
    return cfg


def model_config(cfg: Config) -> ModelConfig:
    """The ``ModelConfig`` of a config's model section (preset + field overrides)."""
    section = dict(cfg.get("model") or {})
    name = section.pop("preset", "r101-vit16")
    base = preset(name).to_dict()
    try:
        return ModelConfig.from_dict(_merge(base, section))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model section: {e}") from e


def solver_config(cfg: Config) -> SolverConfig:
    s = dict(cfg["solver"])
    s["betas"] = tuple(s["betas"])
    return SolverConfig(**s)


def loss_config(cfg: Config) -> LossConfig:
    return LossConfig(**cfg["loss"])


def dump(cfg: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
