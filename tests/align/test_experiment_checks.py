"""`unialign run`: what --check finds before any work (files, rows, sizes, parameter values), the base/query and
held-out-test protocols, and the provenance of results.json (align.app.experiment)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from align._io import sha256_file
from align.cli import main
from align.app.experiment import ConfigError, load_config, run_experiment


def _rotated(gen, X, noise=0.1):
    R = np.linalg.qr(np.random.default_rng(42).normal(size=(X.shape[1], X.shape[1])))[0]
    return (X @ R + noise * gen.normal(size=X.shape)).astype(np.float32)


@pytest.fixture
def toy(tmp_path):
    """x/y: 120 items, y a rotation of x plus noise; xq/yq: 60 other items under the same rotation; yz: unrelated."""
    gen = np.random.default_rng(0)
    X = gen.normal(size=(120, 8))
    Xq = gen.normal(size=(60, 8))
    np.save(tmp_path / "x.npy", X.astype(np.float32))
    np.save(tmp_path / "y.npy", _rotated(gen, X))
    np.save(tmp_path / "xq.npy", Xq.astype(np.float32))
    np.save(tmp_path / "yq.npy", _rotated(gen, Xq))
    np.save(tmp_path / "yz.npy", gen.normal(size=(60, 8)).astype(np.float32))
    return tmp_path


def _write(folder: Path, cfg: dict) -> Path:
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _base(**over):
    cfg = {"name": "t", "out": "out", "seeds": [0], "features": {"x": "x.npy", "y": "y.npy"}, "pairs": [["x", "y"]],
           "similarity": {"metrics": ["linear_cka"]}}
    cfg.update(over)
    return cfg


def _cli_error(path) -> str:
    res = CliRunner().invoke(main, ["run", str(path), "--check"])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    return lines[0]


# ---- feature files ---------------------------------------------------------------------------------------------


def _bad_files(folder: Path) -> dict:
    np.save(folder / "one_d.npy", np.ones(5, np.float32))
    np.save(folder / "words.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(folder / "empty.npy", np.zeros((0, 4), np.float32))
    good = (folder / "x.npy").read_bytes()
    (folder / "cut.npy").write_bytes(good[: len(good) // 2])
    np.savez(folder / "two.npz", a=np.ones((3, 2)), b=np.ones((3, 2)))
    (folder / "junk.npz").write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    from safetensors.numpy import save_file

    save_file({"feats": np.ones((3, 2), np.float32)}, str(folder / "f.safetensors"))
    return {
        "missing.npy": "does not exist",
        "one_d.npy": r"shape \(5,\); features must be 2-D",
        "words.npy": "<U1 values; features must be numbers",
        "empty.npy": "empty array",
        "cut.npy": "truncated or corrupt",
        "two.npz": r"holds 2 arrays \['a', 'b'\]; pick one",
        "two.npz:c": "has no array 'c'",
        "junk.npz": "truncated or corrupt",
        "f.safetensors:other": "has no array 'other'",
    }


def test_unreadable_feature_files_fail_the_check_naming_the_key(toy):
    for file, message in _bad_files(toy).items():
        path = _write(toy, _base(features={"x": file, "y": "y.npy"}))
        line = _cli_error(path)
        assert line.startswith("error: features.x.file: "), line
        assert re.search(message, line), (file, line)
    assert not (toy / "out").exists()


def test_the_check_reads_headers_not_arrays(toy, monkeypatch):
    np.savez(toy / "y.npz", feats=np.load(toy / "y.npy"))
    from safetensors.numpy import save_file

    save_file({"feats": np.load(toy / "x.npy")}, str(toy / "x.safetensors"))
    real_load = np.load

    def no_full_load(file, mmap_mode=None, **kwargs):
        assert mmap_mode == "r", f"{file} read in full"
        return real_load(file, mmap_mode=mmap_mode, **kwargs)

    monkeypatch.setattr(np, "load", no_full_load)
    cfg = load_config(_write(toy, _base(features={"x": "x.safetensors:feats", "y": "y.npz:feats", "z": "x.npy"})))
    assert {f: (s.n_items, s.dim) for f, s in cfg.features.items()} == {"x": (120, 8), "y": (120, 8), "z": (120, 8)}


# ---- sizes -----------------------------------------------------------------------------------------------------


def test_paired_feature_sets_need_the_same_rows(toy):
    np.save(toy / "y100.npy", np.load(toy / "y.npy")[:100])
    line = _cli_error(_write(toy, _base(features={"x": "x.npy", "y": "y100.npy"})))
    assert line == ("error: pairs[0]: 'x' has 120 items and 'y' has 100; the two feature sets of a pair must describe "
                    "the same items in the same order")


def test_known_pairs_plus_queries_must_fit_in_the_items(toy):
    cfg = _base(similarity=None, matching={"methods": ["procrustes"], "n_known": [10, 100], "n_query": 30})
    assert _cli_error(_write(toy, cfg)) == \
        "error: matching.n_known[1]: 100 known pairs + 30 queries need 130 items; x has 120"


@pytest.mark.parametrize("section, message", [
    ({"similarity": {"metrics": [{"name": "rbf_cka", "params": {"sigma": -1}}]}},
     r"similarity.metrics\[0\].params: .*sigma.* must be > 0"),
    ({"similarity": {"metrics": [{"name": "mutual_knn", "grid": {"k": [5, 0]}}]}},
     r"similarity.metrics\[0\].params: .*`k` must be >= 1"),
    ({"similarity": {"metrics": [{"name": "linear_cka", "params": {"sigma": 1.0}}]}},
     r"similarity.metrics\[0\].params: unknown parameter.*'sigma'"),
    ({"matching": {"methods": ["procrustes", {"name": "faq", "params": {"kernel": "rbff"}}], "n_known": [5]}},
     r"matching.methods\[1\].params: .*kernel.*rbff"),
    ({"matching": {"methods": [{"name": "faq", "params": {"n_init": 0}}], "n_known": [5]}},
     r"matching.methods\[0\].params: .*n_init"),
    ({"matching": {"methods": [{"name": "asif", "grid": {"power": [8.0, -1.0]}}], "n_known": [5]}},
     r"matching.methods\[0\].params: .*power"),
    ({"projectors": {"kinds": ["procrustes", {"kind": "mlp", "params": {"dropout": 2.0}}]}},
     r"projectors.kinds\[1\].params: .*dropout"),
    ({"projectors": {"kinds": [{"kind": "glu", "params": {"loss": "siglpi"}}]}},
     r"projectors.kinds\[0\].params: .*siglpi"),
    ({"projectors": {"kinds": [{"kind": "linear", "params": {"solver": "trained", "lr": -1.0}}]}},
     r"projectors.kinds\[0\].params: .*lr"),
])
def test_parameter_values_a_method_rejects_fail_the_check(toy, section, message):
    cfg = _base(**{"similarity": None, **section})
    with pytest.raises(ConfigError, match=rf"^{message}"):
        load_config(_write(toy, cfg))


def test_valid_parameters_that_need_wide_features_pass(toy):
    """cca with 32 components on 8-d stand-ins would fail; the stand-in is widened to the dimension parameters."""
    np.save(toy / "x64.npy", np.random.default_rng(1).normal(size=(120, 64)).astype(np.float32))
    cfg = _base(similarity=None, features={"x": "x64.npy", "y": "x64.npy"},
                projectors={"kinds": [{"kind": "cca", "params": {"n_components": 32}}]})
    assert load_config(_write(toy, cfg)).projectors.kinds[0].params == {"n_components": 32}


def test_the_run_repeats_the_checks_on_the_real_shapes(toy):
    """A feature file that changed after the check (fewer rows) stops the run before any cell is written."""
    cfg = load_config(_write(toy, _base()))
    np.save(toy / "y.npy", np.load(toy / "y.npy")[:90])
    with pytest.raises(ConfigError, match=r"^pairs\[0\]: 'x' has 120 items and 'y' has 90"):
        run_experiment(cfg)
    assert not list((toy / "out" / "cells").rglob("*.json"))


def test_unset_environment_variables_name_the_key(toy, monkeypatch):
    monkeypatch.setenv("UNIALIGN_TEST_FEATS", str(toy))
    feats = {"x": "$UNIALIGN_TEST_FEATS/x.npy", "y": "${UNIALIGN_TEST_FEATS}/y.npy"}
    cfg = load_config(_write(toy, _base(features=feats)))
    assert cfg.features["y"].file == str(toy / "y.npy")
    monkeypatch.delenv("UNIALIGN_TEST_FEATS")
    with pytest.raises(ConfigError, match=r"^features.x.file: uses \$UNIALIGN_TEST_FEATS, which is not set"):
        load_config(_write(toy, _base(features={"x": "$UNIALIGN_TEST_FEATS/x.npy", "y": "y.npy"})))


# ---- base pairs from one feature set, queries from another -------------------------------------------------------


def _query_cfg(**matching):
    m = {"methods": ["procrustes", "local_cka"], "n_known": [20], "n_query": 40, "n_splits": 2,
         "query": {"x": "xq", "y": "yq"}}
    m.update(matching)
    return _base(similarity=None, seeds=[0, 1], matching=m,
                 features={"x": "x.npy", "y": "y.npy", "xq": "xq.npy", "yq": "yq.npy", "yz": "yz.npy"})


def test_queries_come_from_the_query_feature_sets(toy):
    res = run_experiment(load_config(_write(toy, _query_cfg())))
    acc = {a["method"]: a for a in res.aggregates if a["measure"] == "accuracy"}
    assert acc["procrustes"]["mean"] >= 0.9 and acc["procrustes"]["n"] == 4  # 2 seeds x 2 splits
    r1 = next(a for a in res.aggregates if a["method"] == "local_cka" and a["measure"] == "R@1")
    r5 = next(a for a in res.aggregates if a["method"] == "local_cka" and a["measure"] == "R@5")
    assert r1["mean"] <= r5["mean"] <= 1.0 and r1["n"] == 4  # Recall@k per split, pooled like the accuracies
    # the same base pairs with unrelated query partners: chance level, so the queries really are the query sets
    bad = run_experiment(load_config(_write(toy, _query_cfg(query={"x": "xq", "y": "yz"}, methods=["procrustes"]))))
    assert next(a for a in bad.aggregates if a["measure"] == "accuracy")["mean"] < 0.2
    assert "(queries of x)" in (toy / "out" / "report.md").read_text()


@pytest.mark.parametrize("change, message", [
    ({"query": {"x": "xq"}}, r"^matching.query: pairs\[0\] \['x', 'y'\]: no feature set for the query items of 'y'"),
    ({"query": {"x": "x", "y": "yq"}}, r"^matching.query.x: names 'x' itself"),
    ({"query": {"x": "xq", "y": "nope"}}, r"^matching.query.y: must name a defined feature set"),
    ({"query": {"xq": "x", "y": "yq"}}, r"^matching.query.xq: is not a feature set of the pairs"),
    ({"query": ["xq", "yq"]}, r"^matching.query: must map each feature set"),
    ({"known_selection": "kmeans"}, r"^matching.known_selection: only 'random' works with matching.query"),
    ({"n_query": 61}, r"^matching.n_query: 61 queries need 61 items; xq has 60"),
    ({"n_known": [20, 121]}, r"^matching.n_known\[1\]: 121 known pairs need 121 base items; x has 120"),
])
def test_bad_query_sections_name_the_key(toy, change, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(toy, _query_cfg(**change)))


def test_query_feature_sets_must_match_rows_and_width(toy):
    np.save(toy / "yq50.npy", np.load(toy / "yq.npy")[:50])
    np.save(toy / "xq9.npy", np.ones((60, 9), np.float32))
    cfg = _query_cfg(query={"x": "xq", "y": "yq50"})
    cfg["features"]["yq50"] = "yq50.npy"
    with pytest.raises(ConfigError, match=r"^matching.query: 'xq' has 60 items and 'yq50' has 50"):
        load_config(_write(toy, cfg))
    cfg = _query_cfg(query={"x": "xq9", "y": "yq"})
    cfg["features"]["xq9"] = "xq9.npy"
    with pytest.raises(ConfigError, match=r"^matching.query.x: 'xq9' has 9-d features but 'x' has 8-d"):
        load_config(_write(toy, cfg))


# ---- projectors tested on other feature sets ------------------------------------------------------------------------


def test_projectors_train_on_the_pairs_and_test_on_the_test_sets(toy):
    cfg = _base(similarity=None, features={"x": "x.npy", "y": "y.npy", "xq": "xq.npy", "yq": "yq.npy"},
                projectors={"kinds": ["procrustes"], "test": {"x": "xq", "y": "yq"}})
    res = run_experiment(load_config(_write(toy, cfg)))
    cell = json.loads(next((toy / "out" / "cells" / "projectors").glob("*.json")).read_text())
    assert cell["result"]["n_train"] == 120 and cell["result"]["n_test"] == 60
    assert next(a for a in res.aggregates if a["measure"] == "x2y R@1")["mean"] >= 0.9
    cfg["projectors"]["test_fraction"] = 0.3
    with pytest.raises(ConfigError, match=r"^projectors.test_fraction: does not apply with projectors.test"):
        load_config(_write(toy, cfg))


def test_recall_cut_offs_must_fit_in_the_test_split(toy):
    """projectors.ks larger than the test split fails the check (and the start of a run), not after the training."""
    cfg = _base(similarity=None, projectors={"kinds": ["procrustes"], "test_fraction": 0.05})  # 6 of 120 items
    assert re.fullmatch(r"error: projectors.ks: Recall@10 needs at least 10 test items but test_fraction 0.05 of "
                        r"the 120 items of 'x' leaves 6; use cut-offs up to 6 or raise projectors.test_fraction",
                        _cli_error(_write(toy, cfg)))
    cfg["projectors"]["ks"] = [1, 6]  # the largest that fits
    assert load_config(_write(toy, cfg)).projectors.ks == (1, 6)
    # held-out test feature sets: their rows are the split
    np.save(toy / "xq8.npy", np.load(toy / "xq.npy")[:8])
    np.save(toy / "yq8.npy", np.load(toy / "yq.npy")[:8])
    held = _base(similarity=None, features={"x": "x.npy", "y": "y.npy", "xq": "xq8.npy", "yq": "yq8.npy"},
                 projectors={"kinds": ["procrustes"], "test": {"x": "xq", "y": "yq"}, "ks": [1, 8]})
    cfg = load_config(_write(toy, held))
    held["projectors"]["ks"] = [1, 5, 10]
    with pytest.raises(ConfigError, match=r"^projectors.ks: Recall@10 needs at least 10 test items but the test "
                                          r"feature set 'xq' has 8; use cut-offs up to 8$"):
        load_config(_write(toy, held))
    # the run repeats the check on the real shapes: a test file cut after the check stops it before any cell
    np.save(toy / "xq8.npy", np.load(toy / "xq.npy")[:4])
    np.save(toy / "yq8.npy", np.load(toy / "yq.npy")[:4])
    with pytest.raises(ConfigError, match=r"^projectors.ks: Recall@8 needs at least 8 test items .* has 4;"):
        run_experiment(cfg)
    assert not list((toy / "out" / "cells").rglob("*.json"))


# ---- provenance --------------------------------------------------------------------------------------------------


def test_results_record_versions_feature_files_and_seeds(toy):
    import align

    cfg = _base(seeds=[3, 4], similarity={"metrics": ["linear_cka"], "permutations": 2})
    run_experiment(load_config(_write(toy, cfg)))
    prov = json.loads((toy / "out" / "results.json").read_text())["provenance"]
    assert prov["unialign"] == align.__version__ and prov["seeds"] == [3, 4]
    assert prov["features"]["y"]["sha256"] == sha256_file(toy / "y.npy")
    assert prov["features"]["x"]["file"] == str(toy / "x.npy") and prov["features"]["x"]["shape"] == [120, 8]


def test_old_yaml_keys_still_work_with_a_warning(toy):
    """matching.n_seeds / seed_selection are read as n_known / known_selection for a release, with one warning each;
    giving both spellings is an error naming the key."""
    m = {"methods": ["procrustes"], "n_known": [10], "n_query": 30, "known_selection": "random"}
    new = load_config(_write(toy, _base(similarity=None, matching=m)))
    warnings = []
    old = load_config(_write(toy, _base(similarity=None, matching={
        "methods": ["procrustes"], "n_seeds": [10], "n_query": 30, "seed_selection": "random"})), warn=warnings.append)
    assert old.matching == new.matching
    assert [w.split(" is ")[0] for w in warnings] == ["warning: matching.n_seeds", "warning: matching.seed_selection"]
    with pytest.raises(ConfigError, match=r"^matching.n_seeds: is the old name of matching.n_known"):
        load_config(_write(toy, _base(similarity=None, matching={**m, "n_seeds": [10]})))


def test_similarity_entries_may_set_device_and_chunk_size(toy):
    """compare() takes device and the memory knob as named arguments, so a metric entry may set them."""
    cfg = load_config(_write(toy, _base(matching=None, similarity={
        "metrics": [{"name": "linear_cka", "params": {"device": "cpu", "chunk_size": 16}}]})))
    res = run_experiment(cfg)
    assert any(a["measure"] == "value" for a in res.aggregates)
