"""Requests beyond what the data or the machine holds, and the line between bad input and bugs.

- A cut-off larger than the items it ranks (``retrieve --ks``, ``zeroshot --top-k``, k-NN metrics with k >= n) is a
  one-line error, never a trivially perfect number.
- A computation whose dense matrices exceed the free memory is refused before anything is allocated, in one line that
  names the memory needed and the fix (the free memory is patched small here, so nothing big is allocated).
- Only the library's own validation errors become one-liners; a ``TypeError`` or ``KeyError`` from a bug keeps its
  traceback, and wrong types given by the user are ``ValueError`` s.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import align._validation as validation
from align.cli import main

from ._cli_helpers import one_error_line as _error
from ._cli_helpers import zeroshot_inputs


def _invoke(args, expect):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, (result.stdout, result.stderr, result.exception)
    return result


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6))
    out = {"tmp": tmp}
    for name, arr in (("X", X), ("Y", X @ rng.standard_normal((6, 5))), ("X10", X[:10]),
                      ("wide", rng.standard_normal((10, 3000)).astype(np.float32))):
        np.save(tmp / f"{name}.npy", arr)
        out[name] = tmp / f"{name}.npy"
    np.save(tmp / "pos10.npy", np.arange(10))
    out["pos10"] = tmp / "pos10.npy"
    out["proj"] = tmp / "p.pt"
    _invoke(["fit", "--kind", "linear", "--x", out["X"], "--y", out["Y"], "--val-fraction", "0", "--out",
             out["proj"]], 0)
    return out


# ---- cut-offs beyond the items ------------------------------------------------------------------------------------
def test_retrieve_ks_larger_than_the_gallery(files):
    line = _error(_invoke(["retrieve", "--projector", files["proj"], "--x", files["X"], "--y", files["Y"],
                           "--ks", "1,100"], 1))
    assert "--ks 100" in line and "gallery --y of 40 items" in line and "up to 40" in line
    out = json.loads(_invoke(["retrieve", "--projector", files["proj"], "--x", files["X"], "--y", files["Y"],
                              "--ks", "1,40"], 0).stdout)
    assert out["query_to_gallery"]["R@40"] == 1.0
    # the reverse direction ranks the queries: 10 queries cap k too
    line = _error(_invoke(["retrieve", "--projector", files["proj"], "--x", files["X10"], "--y", files["Y"],
                           "--ks", "20", "--positives", files["pos10"]], 1))
    assert "query set --x" in line and "up to 10" in line


@pytest.mark.parametrize("ks", ["0", "1,-5", ","])
def test_retrieve_ks_must_be_positive(files, ks):
    res = _invoke(["retrieve", "--projector", files["proj"], "--x", files["X"], "--y", files["Y"], "--ks", ks], 2)
    assert "--ks" in res.stderr


def test_zeroshot_top_k_larger_than_the_classes(tmp_path):
    line = _error(_invoke(zeroshot_inputs(tmp_path) + ["--top-k", "4"], 1))
    assert "--top-k 4 is larger than the 3 candidate classes" in line


@pytest.mark.parametrize("metric", ["mutual_knn", "cknna", "cycle_knn"])
def test_knn_metrics_refuse_k_at_least_n(files, metric):
    line = _error(_invoke(["similarity", files["X10"], files["X10"], "--metric", metric, "--k", "10"], 1))
    assert "n - 1 = 9" in line
    _invoke(["similarity", files["X10"], files["X10"], "--metric", metric, "--k", "9"], 0)


# ---- memory ------------------------------------------------------------------------------------------------------
@pytest.fixture
def small_memory(monkeypatch):
    """Pretend 4 KiB are free."""
    monkeypatch.setattr(validation, "available_memory", lambda device=None: 4096)


@pytest.mark.parametrize("method", ["faq", "gw", "local_cka", "procrustes"])
def test_dense_matching_beyond_free_memory_is_refused(files, small_memory, method):
    line = _error(_invoke(["match", files["X"], files["Y"], "--method", method, "--seeds",
                           _pairs(files["tmp"])], 1))
    assert "needs about" in line and "only 4.0 KiB of memory is available" in line and "match fewer items" in line


def _pairs(tmp):
    path = tmp / "pairs.csv"
    path.write_text("0,0\n1,1\n2,2\n3,3\n")
    return path


def test_matching_that_fits_is_not_refused(files):
    _invoke(["match", files["X"], files["Y"], "--method", "faq", "--seeds", _pairs(files["tmp"])], 0)


def _memory_asked(monkeypatch, args) -> list[tuple[float, str]]:
    """``(nbytes, what)`` of every memory check a CLI run asks for, whatever the estimate's formula: each library
    module's ``check_memory`` is replaced by a recorder (which refuses nothing) for this run only."""
    import sys

    import matching  # noqa: F401 - loads the modules whose check is recorded, so they can be patched

    asked, check_memory = [], validation.check_memory
    with monkeypatch.context() as mp:
        for name, module in list(sys.modules.items()):
            if name.split(".")[0] in ("align", "matching") and getattr(module, "check_memory", None) is check_memory:
                mp.setattr(module, "check_memory", lambda nbytes, what, fix, **_: asked.append((float(nbytes), what)))
        _invoke(args, 0)
    return asked


def test_evaluation_protocol_is_sized_by_its_splits(files, monkeypatch):
    """evaluate matches n_seeds + n_query items per split, not all n: 15 items fit where 40 would not.

    The free memory is set to the guard's own estimate for the 15-item split (recorded, not recomputed here)."""
    split = ["match", files["X"], files["Y"], "--method", "faq", "--n-seeds", "5", "--n-query", "10", "--splits", "1",
             "-p", "low_rank=false"]
    full = ["match", files["X"], files["Y"], "--method", "faq", "--seeds", _pairs(files["tmp"]), "-p", "low_rank=false"]
    asked_split, asked_full = _memory_asked(monkeypatch, split), _memory_asked(monkeypatch, full)
    assert any("15 x 15 items" in what for _, what in asked_split), asked_split
    assert not any("40 x 40 items" in what for _, what in asked_split), asked_split  # the split, never all n
    need_15 = max(n for n, _ in asked_split)  # whatever the split run asks for fits
    need_40 = max(n for n, what in asked_full if "40 x 40 items" in what)
    assert need_15 < need_40
    monkeypatch.setattr(validation, "available_memory", lambda device=None: need_15)
    _invoke(split, 0)
    assert "40 x 40 items" in _error(_invoke(full, 1))


@pytest.mark.parametrize("metric, fragment", [
    ("linear_cka", "Gram blocks"),  # n = 10 < d = 3000: the Gram route
    ("svcca", "feature-space moments"),  # d x d moments
    ("rsa", "dissimilarity"),
])
def test_similarity_beyond_free_memory_is_refused(files, small_memory, metric, fragment):
    line = _error(_invoke(["similarity", files["wide"], files["wide"], "--metric", metric], 1))
    assert fragment in line and "needs about" in line and "only 4.0 KiB" in line


def test_the_python_api_is_guarded_too(small_memory, rng):
    """matching.match / evaluate and similarity.compare / permutation_null refuse before allocating."""
    import matching
    from align import similarity

    X, Y = rng.standard_normal((40, 6)), rng.standard_normal((40, 5))
    with pytest.raises(MemoryError, match=r"method 'gw' on 40 x 40 items.*match fewer items"):
        matching.match(X, Y, "gw", partial_match=[[0, 0], [1, 1]])
    with pytest.raises(MemoryError, match=r"method 'faq' on 15 x 15 items"):
        matching.evaluate(X, Y, "faq", n_seeds=5, n_query=10, n_splits=1, rng=0)
    with pytest.raises(MemoryError, match=r"metric 'rbf_cka' on \(40, 6\) and \(40, 5\).*random subset"):
        similarity.compare(X, Y, "rbf_cka")
    with pytest.raises(MemoryError, match=r"metric 'rsa'"):
        similarity.permutation_null(X, Y, "rsa", n_permutations=2, rng=0)


def test_check_memory_unknown_or_sufficient_never_refuses(monkeypatch):
    monkeypatch.setattr(validation, "available_memory", lambda device=None: None)
    validation.check_memory(1e30, "anything", "no fix")
    monkeypatch.setattr(validation, "available_memory", lambda device=None: 100)
    validation.check_memory(100, "exactly the free memory", "no fix")
    with pytest.raises(validation.MemoryBudgetError, match="needs about 101 B but only 100 B"):
        validation.check_memory(101, "one byte more", "no fix")


# ---- bad input vs bugs ---------------------------------------------------------------------------------------------
def _buggy_type_error(path):
    return None + 1  # a bug, not bad input


def _buggy_key_error(path):
    return {}["missing"]


@pytest.mark.parametrize("bug, exc_type", [(_buggy_type_error, TypeError), (_buggy_key_error, KeyError)])
def test_a_bug_keeps_its_traceback(files, monkeypatch, bug, exc_type):
    monkeypatch.setattr("align.cli.load_feature_option", bug)
    result = CliRunner().invoke(main, ["similarity", str(files["X"]), str(files["Y"])])
    assert result.exit_code != 0
    assert isinstance(result.exception, exc_type)  # propagated: the console shows the traceback
    assert not [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]


def _import_missing_package(path):
    import unialign_no_such_package  # noqa: F401


def _import_missing_own_name(path):
    from align import no_such_module  # noqa: F401


def test_a_missing_third_party_package_is_one_line_but_a_broken_own_import_is_a_bug(files, monkeypatch):
    monkeypatch.setattr("align.cli.load_feature_option", _import_missing_package)
    line = _error(_invoke(["similarity", files["X"], files["Y"]], 1))
    assert "no module named 'unialign_no_such_package'" in line.lower() and "install the one that provides" in line
    monkeypatch.setattr("align.cli.load_feature_option", _import_missing_own_name)
    result = CliRunner().invoke(main, ["similarity", str(files["X"]), str(files["Y"])])
    assert result.exit_code != 0 and isinstance(result.exception, ImportError)


def test_free_gpu_memory_is_what_cuda_reports():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    _free, total = torch.cuda.mem_get_info(0)
    assert 0 < validation.available_memory("cuda:0") <= total
    with pytest.raises(validation.MemoryBudgetError, match="of GPU memory is available"):
        validation.check_memory(2 * total, "a test", "none", device="cuda:0")


def test_a_bug_keeps_its_traceback_in_a_real_process(files):
    import subprocess
    import sys

    code = ("import align.cli as c\n"
            "c.load_feature_option = lambda path: None + 1\n"
            "c.main(['similarity', 'a.npy', 'b.npy'])\n")
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "Traceback" in res.stderr and "TypeError" in res.stderr
    assert "error: " not in res.stderr.splitlines()[-1]


def test_errors_raised_on_purpose_are_told_from_bugs():
    """The library's deliberate errors are ValueErrors (wrong types too, as InputTypeError; a missing optional
    package as MissingPackageError); a TypeError from a bug is not."""
    from align.encoders import load_encoder

    with pytest.raises(validation.InputTypeError) as info:
        load_encoder(123)
    assert isinstance(info.value, (TypeError, ValueError))
    with pytest.raises(TypeError) as info:
        _buggy_type_error(None)
    assert not isinstance(info.value, ValueError)
    assert issubclass(validation.MissingPackageError, ImportError) and issubclass(validation.MissingPackageError,
                                                                                    ValueError)


@pytest.mark.parametrize("call, fragment", [
    (lambda: validation.check_array(np.array([["a", "b"]])), "dtype <U1"),
    (lambda: validation.check_array(np.ones((3, 2), dtype=complex)), "real-valued"),
    (lambda: validation.check_array("features.npy"), "numpy array or torch tensor"),
    (lambda: validation.check_rng(np.random.RandomState(0)), "RandomState is not accepted"),
    (lambda: validation.check_int("k", 2.5), "must be an integer"),
    (lambda: validation.check_float("alpha", "big"), "must be a real number"),
    (lambda: validation.check_choice("metric", 3, ["a"]), "must be a string"),
    (lambda: validation.check_partial_match(np.array([[0.5, 1.0]]), 3, 3), "integer array"),
    (lambda: __import__("projectors").make_projector("linear", nosuch=1), "unknown parameter"),
])
def test_wrong_types_from_the_user_are_value_errors(call, fragment):
    """Wrong types and dtypes are ValueErrors (InputTypeError is also a TypeError, the codebase's convention)."""
    with pytest.raises(ValueError, match=fragment) as info:
        call()
    assert isinstance(info.value, TypeError) and isinstance(info.value, validation.InputTypeError)


def test_integer_and_string_feature_files_at_the_cli(files, tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a", "b"], ["c", "d"]]))
    line = _error(_invoke(["retrieve", "--projector", files["proj"], "--x", tmp_path / "s.npy", "--y", files["Y"]], 1))
    assert "real-valued numeric array" in line
    line = _error(_invoke(["fit", "--kind", "linear", "--x", tmp_path / "s.npy", "--y", tmp_path / "s.npy",
                           "--val-fraction", "0", "--out", tmp_path / "p.pt"], 1))
    assert "dtype" in line


def test_closed_form_fit_and_select_beyond_free_memory_are_refused(files, small_memory, tmp_path):
    line = _error(_invoke(["fit", "--kind", "procrustes", "--x", files["wide"], "--y", files["wide"], "--val-fraction",
                           "0", "--out", tmp_path / "p.pt"], 1))
    assert "--kind procrustes on 3,000-d and 3,000-d features" in line and "needs about 824.0 MiB" in line
    assert "only 4.0 KiB" in line and "reduce the dimensions" in line
    assert not (tmp_path / "p.pt").exists()
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"item {i}\n" for i in range(10)))
    line = _error(_invoke(["select", "--dataset", f"text:{lines}", "--features", f"a={files['wide']}",
                           "--features", f"b={files['wide']}", "--metric", "rsa", "--no-progress"], 1))
    assert "metric 'rsa' on (10, 3,000)" in line and "only 4.0 KiB" in line


def test_a_cgroup_limit_below_the_free_memory_is_what_counts(tmp_path, monkeypatch):
    """Containers and SLURM jobs: MemAvailable is the host's; the cgroup's limit minus its usage is the real room."""
    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("268435456\n")
    (tmp_path / "unlimited.max").write_text("max\n")
    monkeypatch.setattr(validation, "CGROUP_MEMORY_FILES", ((tmp_path / "memory.max", tmp_path / "memory.current"),))
    assert validation.available_memory() == min(validation._cgroup_headroom(), 2**40) == 3 * 2**28
    monkeypatch.setattr(validation, "CGROUP_MEMORY_FILES",
                        ((tmp_path / "unlimited.max", tmp_path / "memory.current"),))
    assert validation._cgroup_headroom() is None and validation.available_memory() > 0


@pytest.mark.parametrize("argv", [["similarity", "{X}", "{Y}", "--device", "cuda"],
                                  ["match", "{X}", "{Y}", "--method", "procrustes", "--n-seeds", "5", "--n-query",
                                   "5", "--splits", "1", "--device", "cuda"]])
def test_cuda_without_a_gpu_is_one_line_not_a_traceback(files, monkeypatch, argv):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = _error(_invoke([a.format(**files) for a in argv], 1))
    assert "cuda" in line.lower() and "cpu" in line.lower()


def test_a_device_that_is_not_one_is_a_one_line_error(files):
    line = _error(_invoke(["match", files["X"], files["Y"], "--method", "procrustes", "--n-seeds", "5", "--n-query",
                           "5", "--splits", "1", "--device", "gpu"], 1))
    assert "must be a torch device such as 'cpu'" in line and "'gpu'" in line
