"""The zero-shot testbed's expected band: what the quick start should give, as a mean and a spread over seeds.

One training run of the quick start is one draw: a few unseen classes decide unseen mIoU, and each
of them is either found or confused with a seen neighbour, so float rounding alone (another CPU,
another torch build) or another seed moves unseen mIoU by several points. The band is therefore
measured over seeds (``python benchmarks/zeroshot.py --seeds 0,1,2`` writes it) and kept in one
place, ``train/resources/zeroshot_band.json``, which the quick start reads to say whether a run is
inside what was measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

BAND_PATH = Path(__file__).resolve().parent / "resources" / "zeroshot_band.json"
METRICS = ("seen_mIoU", "unseen_mIoU", "hIoU")
BAND_MODE = "cropmask"  # the faithful mode: the one the band is checked on
SETTINGS = ("train", "val", "clip_steps", "iters")  # quick-start settings a band holds for
TOLERANCE = 5e-4  # half the printed resolution (0.1 %)


def _stats(values: Sequence[float]) -> Dict[str, object]:
    v = [float(x) for x in values]
    return {"mean": float(np.mean(v)), "min": min(v), "max": max(v), "spread": max(v) - min(v), "values": v}


def seed_spread(
    runs: Mapping[int, Sequence[Mapping[str, object]]], backend: Optional[str] = None, precision: str = "fp32"
) -> Dict[str, Dict[str, Dict[str, object]]]:
    """``{mode: {metric: {mean, min, max, spread, values}}}`` over seeds (fractions, not %), from each
    seed's GZSS records (``train.zeroshot_eval.evaluate_bundle``) of one backend (default: the first)."""
    out: Dict[str, Dict[str, Dict[str, object]]] = {}
    seeds = sorted(runs)
    for seed in seeds:
        if not runs[seed]:
            raise ValueError(f"seed {seed} has no GZSS records")
    backend = backend or str(runs[seeds[0]][0]["backend"])
    for seed in seeds:
        for r in runs[seed]:
            if r["backend"] != backend or r.get("precision", "fp32") != precision:
                continue
            mode = out.setdefault(str(r["mode"]), {})
            for m in METRICS:
                mode.setdefault(m, []).append(r[m])
    for mode, metrics in out.items():
        for m, values in metrics.items():
            if len(values) != len(seeds):
                raise ValueError(f"{backend}/{precision}/{mode}: {len(values)} records for {len(seeds)} seeds")
            metrics[m] = _stats(values)
    return out


def make_band(
    spread: Mapping[str, object],
    seeds: Sequence[int],
    settings: Mapping[str, int],
    machine: Mapping[str, object],
    source: str,
) -> Dict[str, object]:
    return {
        "seeds": list(seeds),
        "settings": {k: int(settings[k]) for k in SETTINGS},
        "machine": dict(machine),
        "source": source,
        "modes": dict(spread),
    }


def write_band(band: Mapping[str, object], path: Path = BAND_PATH) -> Path:
    from sdk.atomicio import write_json_atomic

    write_json_atomic(path, band, indent=1)
    return path


def read_band(path: Path = BAND_PATH) -> Optional[Dict[str, object]]:
    """The measured band, or ``None`` when none has been written."""
    if not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text(encoding="utf-8"))


def verdict(
    records: Sequence[Mapping[str, object]], band: Optional[Mapping[str, object]], settings: Mapping[str, int]
) -> List[str]:
    """Lines comparing this run's faithful (``cropmask``) seen / unseen mIoU and hIoU with the band;
    says plainly when a value falls outside the measured range."""
    if not band:
        return ["No expected band has been measured yet (python benchmarks/zeroshot.py --seeds 0,1,2)."]
    mine = next((r for r in records if r["mode"] == BAND_MODE and r.get("precision", "fp32") == "fp32"), None)
    expected = band["modes"].get(BAND_MODE)
    if mine is None or expected is None:
        return [f"No {BAND_MODE} result to compare with the expected band."]
    seeds = ",".join(str(s) for s in band["seeds"])
    lines = [f"Expected ({BAND_MODE}, seeds {seeds}, {band['source']}): mean [min–max] over seeds, %:"]
    outside = []
    for m in METRICS:
        e, v = expected[m], mine[m]
        inside = v is not None and e["min"] - TOLERANCE <= v <= e["max"] + TOLERANCE
        if not inside:
            outside.append(m)
        lines.append(
            f"  {m:12s} this run {_pct(v):>5s}   expected {_pct(e['mean'])} [{_pct(e['min'])}–"
            f"{_pct(e['max'])}]   {'inside' if inside else 'OUTSIDE'}"
        )
    differs = {
        k: (int(settings[k]), band["settings"][k])
        for k in SETTINGS
        if k in settings and int(settings[k]) != band["settings"].get(k)
    }
    if differs:
        lines.append(
            "  (the band was measured with other settings: "
            + ", ".join(f"{k} {mine_v} here vs {theirs}" for k, (mine_v, theirs) in differs.items())
            + "; the comparison is only indicative)"
        )
    if outside:
        lines.append(
            f"  This run is OUTSIDE the measured band on {', '.join(outside)}: one run is one draw "
            f"(benchmarks/results/zeroshot.md has the seed spread); a change that moves a result by "
            f"less than the spread is not measured by one run."
        )
    return lines


def spread_markdown(spread: Mapping[str, Mapping[str, Mapping[str, object]]], seeds: Sequence[int]) -> str:
    """Per mode: seen / unseen mIoU and hIoU as mean, min, max and spread (max − min) over seeds (%)."""
    lines = [
        f"| mode | metric | mean | min | max | spread (max − min) | per seed ({', '.join(map(str, seeds))}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, metrics in spread.items():
        for m in METRICS:
            s = metrics[m]
            lines.append(
                f"| {mode} | {m} | {_pct(s['mean'])} | {_pct(s['min'])} | {_pct(s['max'])} | "
                f"{_pct(s['spread'])} | {' / '.join(_pct(v) for v in s['values'])} |"
            )
    return "\n".join(lines) + "\n"


TIER_KEYS = ("seen_mIoU", "unseen_mIoU", "hIoU", "agreement", "agreement_fp32")


def tier_means(runs: Mapping[int, Sequence[Mapping[str, object]]]) -> List[Dict[str, object]]:
    """Per backend × precision × mode (in the first seed's order): the mean over seeds of GZSS and
    agreement, with hIoU's min and max — the accuracy cost of a tier, less the luck of one run."""
    seeds = sorted(runs)
    keyed = [{(r["backend"], r.get("precision", "fp32"), r["mode"]): r for r in runs[s]} for s in seeds]
    out = []
    for key in keyed[0]:
        rows = [k[key] for k in keyed if key in k]
        if len(rows) != len(seeds):
            raise ValueError(f"{'/'.join(key)}: {len(rows)} records for {len(seeds)} seeds")
        row: Dict[str, object] = {"backend": key[0], "precision": key[1], "mode": key[2], "seeds": len(seeds)}
        for m in TIER_KEYS:
            values = [r.get(m) for r in rows]
            row[m] = None if None in values else float(np.mean(values))
        h = _stats([r["hIoU"] for r in rows])
        row["hIoU_min"], row["hIoU_max"] = h["min"], h["max"]
        out.append(row)
    return out


def tier_markdown(rows: Sequence[Mapping[str, object]]) -> str:
    """The tiers table over seeds (%): means, hIoU's range, agreement with faithful and with the mode's fp32."""
    lines = [
        "| backend | precision | mode | seen mIoU | unseen mIoU | hIoU [min–max] | labels as faithful | "
        "as the same mode in fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['precision']} | {r['mode']} | {_pct(r['seen_mIoU'])} | {_pct(r['unseen_mIoU'])} | "
            f"{_pct(r['hIoU'])} [{_pct(r['hIoU_min'])}–{_pct(r['hIoU_max'])}] | "
            f"{'' if r['agreement'] is None else _pct(r['agreement']) + ' %'} | "
            f"{'' if r['agreement_fp32'] is None else _pct(r['agreement_fp32']) + ' %'} |"
        )
    return "\n".join(lines) + "\n"


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{100 * float(x):.1f}"
