"""`unialign run`: strict config validation, cells, resumability, aggregates and the report (align.app.experiment)."""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from align.cli import main
from align.app.experiment import ConfigError, list_cells, load_config, run_experiment

EXAMPLE = Path(__file__).resolve().parents[2] / "benchmarks" / "configs" / "multi30k-matching.yaml"


@pytest.fixture
def toy(tmp_path):
    """x and y: the same 120 items up to a rotation plus noise; z: unrelated."""
    gen = np.random.default_rng(0)
    X = gen.normal(size=(120, 10))
    R = np.linalg.qr(gen.normal(size=(10, 10)))[0]
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    np.save(tmp_path / "y.npy", (X @ R + 0.2 * gen.normal(size=X.shape)).astype(np.float32))
    np.savez(tmp_path / "z.npz", feats=gen.normal(size=(120, 6)).astype(np.float32))
    return tmp_path


def _config(**over):
    cfg = {
        "name": "toy",
        "out": "out",
        "seeds": [0, 1],
        "features": {"x": "x.npy", "y": {"file": "y.npy"}, "z": "z.npz:feats"},
        "pairs": [["x", "y"], ["x", "z"]],
        "similarity": {"metrics": ["linear_cka", {"name": "mutual_knn", "params": {"k": 5}}], "permutations": 4},
        "matching": {"methods": ["procrustes", {"name": "local_cka", "grid": {"kernel": ["linear", "cosine"]}}],
                     "n_known": [5, 20], "n_query": 30, "n_splits": 2},
        "projectors": {"kinds": ["procrustes", {"kind": "linear", "params": {"alpha": 0.1}}], "test_fraction": 0.25},
    }
    cfg.update(over)
    return cfg


def _write(folder: Path, cfg: dict, name: str = "exp.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(cfg))
    return path


class _Counting:
    """Counts the calls of ``matching.evaluate`` made by the experiment's cells (monkeypatched where they call it),
    and can fail after a number of them (a kill halfway)."""

    def __init__(self, monkeypatch, fail_after=None):
        import matching

        self.calls = 0
        self.fail_after = fail_after
        self.base = matching.evaluate
        monkeypatch.setattr(matching, "evaluate", self._evaluate)

    def _evaluate(self, *args, **kwargs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return self.base(*args, **kwargs)


# ---- validation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, key, message", [
    ({"colour": "red"}, "colour", "unknown key"),
    ({"seeds": [0, "one"]}, r"seeds\[1\]", "must be an integer"),
    ({"seeds": [1, 1]}, "seeds", "repeated"),
    ({"features": {"x": "missing.npy"}}, "features.x.file", "does not exist"),
    ({"features": {"x": {"encoder": "no-such-model", "dataset": "concepts:imagenet-1k"}}}, "features.x.encoder",
     "unknown encoder"),
    ({"features": {"x": {"encoder": "minilm", "dataset": "imagefolder:/no/such/dir"}}}, "features.x.dataset", ""),
    ({"features": {"x": {"encoder": "minilm", "dataset": "concepts:imagenet-1k", "field": "colour"}}},
     "features.x.field", "no field"),
    ({"features": {"x": {"file": "x.npy", "encoder": "minilm"}}}, "features.x", "either"),
    ({"pairs": [["x", "w"]]}, r"pairs\[0\]", "unknown feature set 'w'"),
    ({"pairs": [["x"]]}, r"pairs\[0\]", r"\[X, Y\]"),
    ({"similarity": {"metrics": ["linear_cka"], "null": 5}}, "similarity.null", "unknown key"),
    ({"similarity": {"metrics": ["linear_cka"], None: 5}}, "similarity.null", "valid keys here: metrics, permutations"),
    ({"similarity": {"metrics": ["cka_typo"]}}, r"similarity.metrics\[0\].name", "unknown name 'cka_typo'"),
    ({"matching": {"methods": ["fqa"], "n_known": [5]}}, r"matching.methods\[0\].name", "unknown name 'fqa'"),
    ({"matching": {"methods": [{"name": "faq", "params": {"kernal": "rbf"}}], "n_known": [5]}},
     r"matching.methods\[0\].params", "kernal"),
    ({"matching": {"methods": ["faq"], "n_known": [5], "n_query": "ten"}}, "matching.n_query", "must be an integer"),
    ({"matching": {"methods": ["faq"]}}, "matching.n_known", "is required"),
    ({"matching": {"methods": ["faq", "procrustes"], "n_known": [0, 10]}}, "matching.n_known",
     "'procrustes' needs at least 2 known pairs, got 0"),
    ({"matching": {"methods": [{"name": "faq", "params": {"kernel": "rbf"}, "grid": {"kernel": ["rbf"]}}],
                   "n_known": [5]}}, r"matching.methods\[0\].grid.kernel", "one place"),
    ({"projectors": {"kinds": ["mlp"], "test_fraction": 1.5}}, "projectors.test_fraction", "between 0 and 1"),
    ({"projectors": {"kinds": [{"kind": "mlp", "params": {"hidden": 3}}]}}, r"projectors.kinds\[0\].params",
     "hidden"),
    ({"projectors": {"kinds": ["transformer"]}}, r"projectors.kinds\[0\].kind", "unknown kind"),
    ({"projectors": {"kinds": ["linear"], "layers": "some"}}, "projectors.layers", "'first'"),
])
def test_bad_configs_name_the_key(toy, change, key, message):
    path = _write(toy, _config(**change))
    with pytest.raises(ConfigError, match=rf"^{key}: .*{message}"):
        load_config(path)


def test_no_task_and_bad_yaml_are_rejected(toy):
    cfg = _config()
    for task in ("similarity", "matching", "projectors"):
        cfg.pop(task)
    with pytest.raises(ConfigError, match="no task given"):
        load_config(_write(toy, cfg))
    bad = toy / "bad.yaml"
    bad.write_text("features: {x: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_cli_rejects_a_bad_config_before_any_work(toy):
    path = _write(toy, _config(matching={"methods": ["faq"], "n_known": [5], "n_splits": -1}))
    res = CliRunner().invoke(main, ["run", str(path), "--no-progress"])
    assert res.exit_code == 1
    assert res.output.strip() == "error: matching.n_splits: must be >= 1"
    assert not (toy / "out").exists()  # nothing was started


def test_check_lists_thelist_cells(toy):
    res = CliRunner().invoke(main, ["run", str(_write(toy, _config())), "--check"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    # similarity: 2 pairs x 2 metrics x 2 seeds; matching: 2 pairs x (1 + 2 grid) x 2 n_known x 2 seeds;
    # projectors: 2 pairs x 2 kinds x 2 seeds
    assert out["cells"] == {"similarity": 8, "matching": 24, "projectors": 8}
    assert out["n_cells"] == 40 and not (toy / "out").exists()


# ---- running ----------------------------------------------------------------------------------------------------


def test_run_writes_results_that_agree_with_thelist_cells(toy):
    cfg = load_config(_write(toy, _config()))
    res = run_experiment(cfg)
    out = toy / "out"
    assert res.n_cells == 40 and res.n_computed == 40 and res.n_cached == 0
    for name in ("results.json", "results.csv", "report.md", "similarity.png", "matching.png", "recall.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "results.json").read_text())
    cells = data["cells"]
    assert len(list((out / "cells").rglob("*.json"))) == 40 == len(cells)

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert set(rows[0]) == {"task", "x", "y", "method", "params", "n_known", "measure", "mean", "std", "n"}

    def row(**kw):
        hits = [r for r in rows if all(str(r[k]) == str(v) for k, v in kw.items())]
        assert len(hits) == 1, kw
        return hits[0]

    # matching aggregates pool every split of every seed
    accs = [a for c in cells if c["task"] == "matching" and c["x"] == "x" and c["y"] == "y"
            and c["method"] == "procrustes" and c["n_known"] == 20 for a in c["result"]["accuracies"]]
    r = row(task="matching", x="x", y="y", method="procrustes", n_known=20, measure="accuracy")
    assert int(r["n"]) == 4 and float(r["mean"]) == pytest.approx(np.mean(accs))
    assert float(r["std"]) == pytest.approx(np.std(accs, ddof=1))
    # planted structure is found, unrelated features are not
    assert float(r["mean"]) >= 0.9
    assert float(row(task="matching", x="x", y="z", method="procrustes", n_known=20, measure="accuracy")["mean"]) < 0.3
    cka_xy = float(row(task="similarity", x="x", y="y", method="linear_cka", measure="value")["mean"])
    cka_xz = float(row(task="similarity", x="x", y="z", method="linear_cka", measure="value")["mean"])
    assert cka_xy > 0.8 and cka_xz < 0.3
    r1 = float(row(task="projectors", x="x", y="y", method="procrustes", measure="x2y R@1")["mean"])
    r5 = float(row(task="projectors", x="x", y="y", method="procrustes", measure="x2y R@5")["mean"])
    assert 0.8 <= r1 <= r5 <= 1.0
    md = (out / "report.md").read_text()
    assert "](matching.png)" in md and "local_cka (kernel=cosine)" in md and f"{cka_xy:.4f}" in md


def test_killed_run_resumes_with_only_the_unfinishedlist_cells(toy, monkeypatch):
    cfg = load_config(_write(toy, _config(similarity=None, projectors=None)))
    n_total = len(list_cells(cfg))
    _Counting(monkeypatch, fail_after=7)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg)
    assert len(list((toy / "out" / "cells").rglob("*.json"))) == 7
    monkeypatch.undo()
    again = _Counting(monkeypatch)
    res = run_experiment(cfg)
    assert again.calls == n_total - 7 and res.n_computed == n_total - 7 and res.n_cached == 7
    # a third run computes nothing, and the results equal an uninterrupted run elsewhere
    monkeypatch.undo()
    third = _Counting(monkeypatch)
    assert run_experiment(cfg).n_computed == 0 and third.calls == 0
    fresh = run_experiment(dataclasses.replace(cfg, out=toy / "fresh"))
    assert [(a["measure"], a["mean"], a["std"]) for a in fresh.aggregates] == \
           [(a["measure"], a["mean"], a["std"]) for a in res.aggregates]


def test_changed_settings_or_features_are_recomputed(toy):
    cfg = _config(similarity=None, projectors=None, seeds=[0])
    first = run_experiment(load_config(_write(toy, cfg)))
    cfg["matching"]["n_query"] = 25
    second = run_experiment(load_config(_write(toy, cfg)))
    assert second.n_computed == first.n_cells and second.n_cached == 0
    # new features under the same file name: cells keyed by content are recomputed
    np.save(toy / "y.npy", np.random.default_rng(9).normal(size=(120, 10)).astype(np.float32))
    third = run_experiment(load_config(_write(toy, cfg)))
    x_y = sum(1 for c in list_cells(load_config(_write(toy, cfg))) if c.y == "y")
    assert third.n_computed == x_y and third.n_cached == third.n_cells - x_y


def test_cli_run_and_training_curves(toy):
    cfg = _config(similarity=None, matching=None, seeds=[0], pairs=[["x", "y"]],
                  projectors={"kinds": [{"kind": "mlp", "params": {"max_epochs": 2, "batch_size": 32,
                                                                   "hidden_dim": 8}}]})
    res = CliRunner().invoke(main, ["run", str(_write(toy, cfg)), "--no-progress", "--out", str(toy / "o2")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n_cells"] == 1 and out["n_computed"] == 1
    assert (toy / "o2" / "training.png").is_file() and (toy / "o2" / "recall.png").is_file()
    cell = next((toy / "o2" / "cells" / "projectors").glob("*.json"))
    hist = json.loads(cell.read_text())["result"]["history"]
    assert [h["epoch"] for h in hist] == list(range(len(hist))) and 1 <= len(hist) <= 2


def test_example_multi30k_config_is_valid(shared_data, monkeypatch):
    monkeypatch.setenv("UNIALIGN_DATA", str(shared_data))
    cfg = load_config(EXAMPLE)
    assert cfg.matching.n_splits == 5
    assert {c.task for c in list_cells(cfg)} == {"matching"}


def test_layer_sweep_heatmap_with_a_known_diagonal(tmp_path):
    """Two layer sets of the same real text encoder: the shared layer compares to itself with CKA 1."""
    words = ["a cat", "a dog", "a red car", "a blue boat", "the sun", "the moon", "a tree", "a house", "an apple",
             "a river", "a bird", "a fish", "a chair", "a cloud"]
    (tmp_path / "words.txt").write_text("\n".join(words) + "\n")
    cfg = {"name": "layers", "out": "out", "cache_dir": str(tmp_path / "cache"),
           "features": {"a": {"encoder": "minilm", "dataset": f"text:{tmp_path / 'words.txt'}", "layers": [2, 6]},
                        "b": {"encoder": "minilm", "dataset": f"text:{tmp_path / 'words.txt'}", "layers": [4, 6]}},
           "pairs": [["a", "b"]], "similarity": {"metrics": ["linear_cka"]},
           "matching": {"methods": ["faq"], "n_known": [4], "n_query": 10, "n_splits": 2, "layers": "all"}}
    res = run_experiment(load_config(_write(tmp_path, cfg)))
    assert res.n_cells == 1 + 4  # one sweep cell; matching on every (layer of a, layer of b)
    acc = {(r["x"], r["y"]): r["mean"] for r in res.aggregates if r["task"] == "matching"}
    assert set(acc) == {(f"a[{i}]", f"b[{j}]") for i in (2, 6) for j in (4, 6)}
    assert acc[("a[6]", "b[6]")] == 1.0  # the same layer of the same model: every item is found
    # (faq at its defaults finds every item of these 14 phrases at every layer pair; that the cells read different
    # arrays is checked on the sweep's CKA matrix below)
    cell = json.loads(next((tmp_path / "out" / "cells" / "similarity").glob("*.json")).read_text())
    sweep = cell["result"]["sweep"]
    assert sweep["layers_x"] == ["hidden_states.2", "hidden_states.6"]
    assert sweep["layers_y"] == ["hidden_states.4", "hidden_states.6"]
    M = np.asarray(sweep["matrix"])
    assert M[1, 1] == pytest.approx(1.0, abs=1e-6)
    assert (M[0] < 1 - 1e-3).all() and M[1, 0] < 1 - 1e-3
    assert cell["result"]["value"] == pytest.approx(M[0, 0])  # the headline value is the first layers' pair
    assert "layers_0.png" in res.files and (tmp_path / "out" / "layers_0.png").is_file()


def test_blind_matching_runs_with_zero_known_pairs_and_reports_its_confidence(tmp_path):
    """The blind route in a YAML experiment: n_known 0, the report says how many splits the confidence trusts."""
    gen = np.random.default_rng(0)
    X = gen.normal(size=(120, 10)) * (1.0 / np.arange(1, 11) ** 0.7)
    R = np.linalg.qr(gen.normal(size=(10, 10)))[0]
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    np.save(tmp_path / "y.npy", (X @ R + 0.02 * gen.normal(size=X.shape)).astype(np.float32))
    np.save(tmp_path / "z.npy", gen.normal(size=(120, 6)).astype(np.float32))
    cfg = {"name": "blind", "out": "out", "seeds": [0], "features": {"x": "x.npy", "y": "y.npy", "z": "z.npy"},
           "pairs": [["x", "y"], ["x", "z"]],
           "matching": {"methods": [{"name": "blind", "params": {"n_candidates": 2}}], "n_known": [0],
                        "n_query": 40, "n_splits": 2}}
    res = run_experiment(load_config(_write(tmp_path, cfg)))
    got = {(a["y"], a["measure"]): a["mean"] for a in res.aggregates}
    assert got[("y", "accuracy")] >= 0.9 and got[("y", "confident")] == 1.0
    assert got[("z", "accuracy")] < 0.3 and got[("z", "confident")] == 0.0
    report = (res.out / "report.md").read_text()
    assert "(confident 2/2)" in report and "(confident 0/2)" in report
