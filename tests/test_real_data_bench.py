"""The real-data benchmark suite (benchmarks/real_data.py) in quick mode: rows, keys, ranges, nulls below values."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "real_data.py"


def _run(tmp_path: Path, env: dict, *args: str) -> list[dict]:
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), *args],
        check=False, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "UNIALIGN_DATA"}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def test_without_data_every_section_is_skipped_with_a_reason(tmp_path):
    rows = _run(tmp_path, _env())
    skipped = [r for r in rows if r.get("status") == "skipped"]
    assert len(skipped) == 1 and "UNIALIGN_DATA" in skipped[0]["reason"]
    assert {r["case"] for r in rows} == {"machine", "all", "total"}
    assert all(r["suite"] == "real" and "time_s" in r for r in rows)


def test_quick_rows(tmp_path, shared_data):
    rows = _run(tmp_path, _env(UNIALIGN_DATA=str(shared_data)))
    assert all(r["suite"] == "real" and isinstance(r["case"], str) and r["time_s"] >= 0 for r in rows)
    # only Debian's optional datasets may be absent (the reason names the package); the rest must run
    skipped = [r for r in rows if r.get("status") == "skipped"]
    assert not [r for r in skipped if "apt-get install" not in r.get("reason", "")], skipped
    by_case: dict[str, list[dict]] = {}
    for r in rows:
        by_case.setdefault(r["case"], []).append(r)

    # similarity: 2 pairs x 7 metrics on Multi30k (SVCCA only in full mode here: d > n); p-values in (0, 1]
    sim = by_case["multi30k/similarity"]
    assert len(sim) == 14
    for r in sim:
        assert {"pair", "metric", "value", "null_mean", "null_std", "p_value", "n", "n_permutations"} <= r.keys()
        assert 0 < r["p_value"] <= 1
    strong = {r["metric"]: r for r in sim if r["pair"] == "minilm EN vs e5-small DE"}
    weak = {r["metric"]: r for r in sim if r["pair"] == "minilm EN vs minilm DE"}
    for metric in ("linear_cka", "unbiased_cka", "rbf_cka", "mutual_knn", "cknna", "rsa"):
        s = strong[metric]
        assert s["value"] > s["null_mean"] + 3 * s["null_std"], metric
        assert s["p_value"] == pytest.approx(1 / (1 + s["n_permutations"]))
        assert 0 <= s["value"] <= 1
    # minilm is English-only: German through minilm aligns less with English than e5 does
    assert strong["linear_cka"]["value"] > weak["linear_cka"]["value"]

    # matching: every training-free method, accuracies in [0, 1]; the best beats chance by far
    match = by_case["multi30k/matching"]
    assert {r["method"] for r in match} == {"faq", "faq+two_opt", "goat", "local_cka", "gw", "entropic_gw",
                                            "fused_gw", "procrustes", "lstsq", "relative", "asif"}
    assert all(0 <= r["accuracy"] <= 1 and r["n_query"] > 0 for r in match)
    assert max(r["accuracy"] for r in match) > 10 * match[0]["chance"]

    # projectors: every kind, recalls in [0, 1], R@1 <= R@5
    proj = by_case["multi30k/projector"]
    assert {r["kind"] for r in proj} == {"none", "linear", "procrustes", "cca", "subspace", "mlp", "glu"}
    assert all(0 <= r["r_at_1"] <= r["r_at_5"] <= 1 for r in proj)

    zs = by_case["imagenet/zeroshot_unseen"]
    assert len(zs) == 4 and all(0 <= r["top1"] <= r["top5"] <= 1 for r in zs)
    assert len(by_case["imagenet/similarity"]) == 14

    if not any(r["case"] == "fashion" for r in skipped):
        fm = by_case["fashion/transfer"]
        assert len(fm) == 6 and all(0 <= r["top1"] <= r["top3"] <= 1 and r["chance_top1"] == 0.1 for r in fm)
        ref = [r for r in fm if "reference" in r["fitted_on"]]
        assert max(r["top1"] for r in ref) > 0.3  # a few labelled images per class: far above chance
