"""`unialign demo --quick`: the real encoders on 200 ImageNet concepts; the report's files and numbers.

One end-to-end run of the command line in a subprocess, as a user runs it (module-scoped fixture, about a minute on
2 busy cores: three model loads dominate), and checks that the numbers are internally consistent and above chance
where the encoders are known to agree, and that stderr holds only the demo's own lines.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import projectors
from align.app.demo import QUICK, sample_photos

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "unialign-demo"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)  # the command must silence third-party bars itself
    proc = subprocess.run([sys.executable, "-m", "align.cli", "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, types.SimpleNamespace(stdout=proc.stdout, stderr=proc.stderr)


def test_demo_stderr_holds_only_its_own_lines(demo_run):
    """No Python warning, no source path, no third-party progress bar: step timings and the summary only."""
    _, result = demo_run
    own = re.compile(r"^(\[\s*\d+\.\ds\] \S|unialign demo: \d+ ImageNet concepts|  \S)")
    lines = result.stderr.replace("\r", "\n").splitlines()
    assert lines, "the demo printed nothing on stderr"
    strangers = [line for line in lines if not own.match(line)]
    assert not strangers, strangers
    for line in lines:
        assert "Warning" not in line and not re.search(r"\.py:\d+", line), line
        assert "Loading weights" not in line and "it/s]" not in line, line


def test_demo_writes_the_report_files(demo_run):
    out, result = demo_run
    for name in ("report.md", "report.json", "similarity.png", "matching.png", "zeroshot.png", "photos.png"):
        path = out / name
        assert path.is_file() and path.stat().st_size > 500, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG_MAGIC
    proj = projectors.load_projector(out / "projector.pt")  # the stitch can be rebuilt from the checkpoint
    assert proj.metadata_["x_encoder"] == "efficientnet-lite0" and proj.metadata_["y_encoder"] == "minilm"
    assert proj.n_features_in_ == 1280 and proj.n_features_y_ == 384
    report = json.loads((out / "report.json").read_text())
    assert proj.metadata_["config"]["seen_classes"] == report["seen_classes"]
    printed = json.loads(result.stdout)
    assert printed["out_dir"] == str(out)
    assert set(printed["summary"]) >= {"linear_cka", "linear_cka_null", "matching_at_most_seeds", "zero_shot",
                                       "photos"}


def test_demo_json_and_report_carry_provenance(demo_run):
    out, result = demo_run
    report = json.loads((out / "report.json").read_text())
    printed = json.loads(result.stdout)
    prov = report["provenance"]
    assert printed["provenance"] == prov
    assert {"unialign", "python", "numpy", "torch", "created"} <= set(prov)
    assert prov["command"].startswith("unialign demo --quick") or "demo --quick" in prov["command"]
    assert prov["encoders"] == {"image": "efficientnet-lite0", "text": ["minilm", "e5-small"]}
    assert prov["seed"] == 0 and prov["config"]["n_classes"] == QUICK.n_classes
    assert [p["path"] for p in prov["photos"]] == [str(p) for _, p in sample_photos()]
    assert all(len(p["sha256"]) == 64 for p in prov["photos"])


def test_demo_summary_says_what_each_number_is_of(demo_run):
    _, result = demo_run
    s = json.loads(result.stdout)["summary"]
    for pair, m in s["matching_at_most_seeds"].items():
        assert m["n_hidden"] == QUICK.n_query and m["chance"] == pytest.approx(1 / QUICK.n_query, abs=1e-4)
        assert f"{QUICK.n_query} hidden concepts" in m["of"]
        line = next(ln for ln in result.stderr.splitlines() if ln.startswith(f"  matching {pair}:"))
        assert f"{m['accuracy']:.2f} = share of the {QUICK.n_query} hidden concepts" in line
        assert f"from {m['n_seeds']} known pairs" in line and f"chance 1/{QUICK.n_query}" in line
    z = s["zero_shot"]
    assert "unseen" in z["of"] and z["chance_top5"] == pytest.approx(5 / z["n_unseen_classes"], abs=1e-4)
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("  zero-shot"))
    assert f"share of the {z['n_unseen_classes']} classes unseen" in line and "chance" in line
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("  linear CKA"))
    for pair, null in s["linear_cka_null"].items():
        assert f"{pair} {s['linear_cka'][pair]:.2f} (null {null['mean']:.2f})" in line


def test_demo_similarity_is_a_valid_similarity_matrix_above_its_null(demo_run):
    out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    sim = report["similarity"]
    assert sim["encoders"] == ["efficientnet-lite0", "minilm", "e5-small"]
    for metric, block in sim["metrics"].items():
        M = np.asarray(block["matrix"])
        np.testing.assert_allclose(M, M.T)
        np.testing.assert_allclose(np.diag(M), 1.0)
        assert ((M >= 0) & (M <= 1 + 1e-9)).all()
        assert len(block["pairs"]) == 3 and block["n_permutations"] == QUICK.n_permutations
        for p in block["pairs"]:
            # real encoders of the same concepts agree far beyond re-paired rows
            assert p["value"] > p["null_mean"] + 3 * p["null_std"], (metric, p)
            assert p["p_value"] == pytest.approx(1 / (QUICK.n_permutations + 1))


def test_demo_matching_and_zero_shot_are_above_chance(demo_run):
    out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    mat = report["matching"]
    assert mat["chance"] == pytest.approx(1 / QUICK.n_query)
    assert len(mat["curves"]) == 3 * len(QUICK.methods)
    for c in mat["curves"]:
        assert [p["n_seeds"] for p in c["points"]] == list(QUICK.seed_counts)
        for p in c["points"]:
            assert 0.0 <= p["accuracy"] <= 1.0 and len(p["accuracies"]) == QUICK.n_splits
            assert p["accuracy"] == pytest.approx(np.mean(p["accuracies"]))
    text = next(c for c in mat["curves"] if (c["x"], c["y"], c["method"]) == ("minilm", "e5-small", "faq"))
    assert text["points"][-1]["accuracy"] > 5 * mat["chance"]  # two text encoders of the same prompts

    zs = report["zero_shot"]
    seen, unseen = set(report["seen_classes"]), set(report["unseen_classes"])
    assert not seen & unseen and seen | unseen == set(report["classes"])
    assert abs(len(seen) - len(unseen)) <= 1
    assert zs["chance"]["top1"] == pytest.approx(1 / len(unseen))
    for r in zs["projectors"].values():
        acc = r["unseen"]["accuracy"]
        assert 0.0 <= acc["top1"] <= acc["top5"] <= 1.0
        assert r["unseen"]["n"] == len(unseen) and r["unseen"]["n_classes"] == len(unseen)
    best = zs["projectors"][zs["best"]]["unseen"]["accuracy"]
    assert best["top1"] >= 3 * zs["chance"]["top1"] and best["top5"] >= 3 * zs["chance"]["top5"]

    # photos: the head's top class is held out from projector training, so the photo test is zero-shot
    assert len(report["photos"]) == len(sample_photos()) >= 1
    for p in report["photos"]:
        assert p["head_top5"][0]["class"] in unseen
        probs = [h["prob"] for h in p["head_top5"]]
        assert probs == sorted(probs, reverse=True)
        cos = [z["cosine"] for z in p["zero_shot_top5"]]
        assert cos == sorted(cos, reverse=True)
        assert all(z["unseen"] == (z["class"] in unseen) for z in p["zero_shot_top5"])


def test_demo_markdown_shows_the_numbers_of_the_run(demo_run):
    out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    for image in ("similarity.png", "matching.png", "zeroshot.png", "photos.png"):
        assert f"]({image})" in md
    cka = report["similarity"]["metrics"]["linear_cka"]["pairs"][0]["value"]
    assert f"{cka:.3f}" in md
    best = report["zero_shot"]["projectors"][report["zero_shot"]["best"]]["unseen"]["accuracy"]["top1"]
    assert f"{best:.3f}" in md
    for p in report["photos"]:
        assert p["photo"] in md and p["head_top5"][0]["lemma"] in md
    assert "permutation null" in md and "**In short.**" in md
    assert report["provenance"]["command"] in md
    for w in report["warnings"]:  # collected into the report, not printed between the step lines
        assert w["message"] in md


def test_sample_photos_exist():
    photos = sample_photos()
    names = [n for n, _ in photos]
    assert "scikit-learn china.jpg" in names
    assert all(p.is_file() for _, p in photos)
