"""The expected band: seed-spread statistics, the quick start's verdict, and the benchmark that writes both."""

import json
import sys
from pathlib import Path

import pytest

from train.quickstart import DEFAULTS
from train.zeroshot_band import (
    BAND_PATH,
    make_band,
    read_band,
    seed_spread,
    spread_markdown,
    tier_markdown,
    tier_means,
    verdict,
    write_band,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS = dict(DEFAULTS)  # the quick start's settings


def _records(seen, unseen, h, backend="onnxruntime"):
    return [
        {
            "backend": backend,
            "precision": "fp32",
            "mode": mode,
            "seen_mIoU": seen,
            "unseen_mIoU": unseen - d,
            "hIoU": h - d,
        }
        for mode, d in (("cropmask", 0.0), ("proposal", 0.3))
    ]


RUNS = {
    0: _records(0.43, 0.434, 0.432) + _records(0.1, 0.1, 0.1, "torch"),
    1: _records(0.39, 0.277, 0.325),
    2: _records(0.375, 0.357, 0.366),
}

TAKEN = {  # takeovers in the cropmask records of seeds 0 and 1
    0: {"takeovers": []},
    1: {
        "takeovers": [
            {"truth": t, "predicted": "teal striped", "share": v}
            for t, v in (("teal wavy", 0.84), ("teal dotted", 0.8))
        ]
    },
}


def test_seed_spread_is_mean_min_max_of_one_backend():
    s = seed_spread(RUNS)
    assert list(s) == ["cropmask", "proposal"]
    u = s["cropmask"]["unseen_mIoU"]
    assert u["values"] == [0.434, 0.277, 0.357] and u["min"] == 0.277 and u["max"] == 0.434
    assert u["mean"] == pytest.approx((0.434 + 0.277 + 0.357) / 3) and u["spread"] == pytest.approx(0.157)
    assert s["proposal"]["hIoU"]["values"] == pytest.approx([0.132, 0.025, 0.066])
    with pytest.raises(ValueError, match="2 records for 3 seeds"):
        seed_spread({**RUNS, 2: _records(0.3, 0.3, 0.3, "torch")})
    table = spread_markdown(s, [0, 1, 2])
    assert "| cropmask | unseen_mIoU | 35.6 | 27.7 | 43.4 | 15.7 | 43.4 / 27.7 / 35.7 |" in table


def test_verdict_says_plainly_when_a_run_is_outside_the_band(tmp_path):
    band = make_band(seed_spread(RUNS), [0, 1, 2], SETTINGS, {"cpu": "x"}, "test")
    path = write_band(band, tmp_path / "band.json")
    assert read_band(path) == json.loads(json.dumps(band)) and read_band(tmp_path / "absent.json") is None
    inside = "\n".join(verdict(_records(0.40, 0.40, 0.40), band, SETTINGS))
    assert "OUTSIDE" not in inside and "unseen_mIoU  this run  40.0   expected 35.6 [27.7–43.4]   inside" in inside
    outside = "\n".join(verdict(_records(0.40, 0.20, 0.40), band, SETTINGS))
    assert "unseen_mIoU  this run  20.0" in outside
    assert "This run is OUTSIDE the measured band on unseen_mIoU" in outside
    assert "other settings" not in outside
    other = "\n".join(verdict(_records(0.40, 0.40, 0.40), band, {**SETTINGS, "iters": 5}))
    assert f"iters 5 here vs {DEFAULTS['iters']}" in other and "only indicative" in other
    assert "No expected band" in verdict(_records(0.4, 0.4, 0.4), None, SETTINGS)[0]


def test_the_shipped_band_covers_cropmask_with_its_settings():
    band = read_band(BAND_PATH)
    e = band["modes"]["cropmask"]
    assert band["settings"] == DEFAULTS and len(band["seeds"]) >= 3  # measured with what the quick start runs
    for m in ("seen_mIoU", "unseen_mIoU", "hIoU"):
        assert 0 <= e[m]["min"] <= e[m]["mean"] <= e[m]["max"] <= 1 and len(e[m]["values"]) == len(band["seeds"])


def test_tier_means_average_each_configuration_over_seeds():
    runs = {
        seed: [
            {**r, "agreement": a, "agreement_fp32": None}
            for r, a in zip(
                _records(0.4 + d, 0.3 + d, 0.35 + d) + _records(0.4, 0.3, 0.35, "openvino"), (1, 0.9, 0.8, 0.7)
            )
        ]
        for seed, d in ((0, 0.0), (1, 0.1), (2, 0.2))
    }
    rows = tier_means(runs)
    assert [(r["backend"], r["mode"]) for r in rows][:2] == [("onnxruntime", "cropmask"), ("onnxruntime", "proposal")]
    crop = rows[0]
    assert crop["hIoU"] == pytest.approx(0.45) and (crop["hIoU_min"], crop["hIoU_max"]) == (0.35, pytest.approx(0.55))
    assert crop["agreement"] == 1 and crop["agreement_fp32"] is None and crop["seeds"] == 3
    assert "| onnxruntime | fp32 | cropmask | 50.0 | 40.0 | 45.0 [35.0–55.0] | 100.0 % |  |" in tier_markdown(rows)
    with pytest.raises(ValueError, match="openvino/fp32/cropmask: 1 records for 2 seeds"):
        tier_means({0: runs[0], 1: runs[1][:2]})


def test_benchmark_seeds_writes_the_spread_table_the_section_and_the_band(tmp_path, monkeypatch):
    from benchmarks import zeroshot

    def fake_run_seed(work, seed, a, backends):
        assert work == tmp_path / "work" and backends == ["onnxruntime"]
        (work / f"seed-{seed}").mkdir(parents=True, exist_ok=True)
        return {
            "seed": seed,
            "clip_zero_shot": {"unseen_acc_all": 0.36},
            "clip_catch_alls": ["teal striped"] if seed == 2 else [],
            "clip_seconds": 1.0,
            "zegformer_seconds": 2.0,
            "records": [{**RUNS[seed][0], **TAKEN.get(seed, {})}, RUNS[seed][1]],
            "seconds_this_run": 3.0,
        }

    monkeypatch.setattr(zeroshot, "run_seed", fake_run_seed)
    band_file = tmp_path / "band.json"
    out = tmp_path / "results"
    out.mkdir()
    (out / "zeroshot.md").write_text("# Zero-shot\n\ntable\n")
    args = [
        "--seeds",
        "0,1,2",
        "--work",
        str(tmp_path / "work"),
        "--backends",
        "onnxruntime",
        "--out-dir",
        str(out),
        "--band",
        str(band_file),
    ]
    assert zeroshot.main(args) == 0
    md = (out / "zeroshot.md").read_text()
    assert md.startswith("# Zero-shot\n\ntable\n") and md.count("## Seed spread") == 1
    assert "| cropmask | unseen_mIoU | 35.6 | 27.7 | 43.4 | 15.7 |" in md
    assert (out / "zeroshot_seeds.md").read_text().strip() in md
    assert "seed 0: none; seed 1: none; seed 2: teal striped." in md  # the catch-alls, per seed
    # where each seed's faithful pixels went; seed 2's evaluation predates the record and says nothing
    assert "- seed 0: none\n- seed 1: teal striped ← teal wavy 84 %, teal dotted 80 %\n\n" in md
    assert "- seed 2:" not in md
    assert zeroshot.main(args) == 0 and (out / "zeroshot.md").read_text().count("## Seed spread") == 1
    band = read_band(band_file)
    assert band["seeds"] == [0, 1, 2] and band["settings"]["val"] == 200
    assert band["modes"]["cropmask"]["unseen_mIoU"]["max"] == 0.434
    calls = []

    def fake_tiers(bundle, data, backends, precisions, calibration_images):
        seed = int(bundle.parent.name.split("-")[1])
        calls.append(seed)
        assert bundle == tmp_path / "work" / f"seed-{seed}" / "bundle" and precisions == ["fp32", "int8"]
        return [{**r, "precision": p, "agreement": 1.0} for p in precisions for r in RUNS[seed][:2]]

    monkeypatch.setattr(zeroshot, "evaluate_tiers", fake_tiers)
    for _ in range(2):  # the second run reuses each seed's tiers.json
        assert zeroshot.main([*args, "--precisions", "fp32,int8", "--no-band"]) == 0
    assert calls == [0, 1, 2]
    tiers = (out / "zeroshot_tiers.md").read_text()
    assert "| onnxruntime | int8 | cropmask | 39.8 | 35.6 | 37.4 [32.5–43.2] | 100.0 % |  |" in tiers
