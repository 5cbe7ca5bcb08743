"""Bad input across the CLI: every case ends with its exit status and exactly one ``error: …`` line, no traceback.

Each case builds tiny files in ``tmp_path`` (see :func:`_files`) and names the exit status (1: bad input, 2: click
usage error) and a fragment the one error line must contain (case-insensitive).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from align.cli import main


def _files(tmp) -> dict[str, str]:
    """Small feature files, good and bad; keys are the placeholders the cases use."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6))
    Y = X @ rng.standard_normal((6, 5)) + 0.01 * rng.standard_normal((40, 5))
    out: dict[str, str] = {}

    def npy(name, arr):
        path = tmp / f"{name}.npy"
        np.save(path, arr)
        out[name] = str(path)

    npy("X", X)
    npy("Y", Y)
    npy("Y39", Y[:39])
    npy("Ywide", rng.standard_normal((40, 9)))
    bad = X.copy()
    bad[3, 2] = np.nan
    npy("Xnan", bad)
    bad = X.copy()
    bad[0, 0] = np.inf
    npy("Xinf", bad)
    npy("Xconst", np.ones((40, 6)))
    npy("X1d", X[:, 0])
    npy("X3d", X.reshape(40, 3, 2))
    npy("Xint", rng.integers(0, 5, size=(40, 6)))
    npy("Xconstint", np.full((40, 6), 3, dtype=np.int64))
    npy("Xempty", np.zeros((0, 6)))
    npy("Xstr", np.array([["a", "b"], ["c", "d"]]))
    npy("X3", X[:3])
    npy("Y3", Y[:3])
    npy("pos", np.arange(40) + 5)
    npy("X2", X[:2])
    npy("Y2", Y[:2])
    # truncated / corrupt files of each format
    raw = (tmp / "X.npy").read_bytes()
    (tmp / "trunc.npy").write_bytes(raw[: len(raw) // 2])
    (tmp / "junk.npy").write_bytes(b"not an array at all")
    (tmp / "empty.npy").write_bytes(b"")
    np.savez(tmp / "good.npz", features=X)
    raw = (tmp / "good.npz").read_bytes()
    (tmp / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    np.savez(tmp / "two.npz", a=X, b=X)
    from safetensors.numpy import save

    raw = save({"features": X})
    (tmp / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    (tmp / "junk.safetensors").write_bytes(b"\xff" * 64)
    (tmp / "X.csv").write_text("1,2\n3,4\n")
    for name in ("trunc.npy", "junk.npy", "empty.npy", "good.npz", "trunc.npz", "two.npz", "trunc.safetensors",
                 "junk.safetensors", "X.csv"):
        out[name.replace(".", "_")] = str(tmp / name)
    out["missing"] = str(tmp / "missing.npy")
    out["dir"] = str(tmp)
    # seed pairs
    (tmp / "dup.csv").write_text("0,0\n0,1\n1,2\n")
    (tmp / "dupcol2.csv").write_text("0,0\n1,0\n")
    (tmp / "unsorted.csv").write_text("5,5\n2,2\n9,9\n1,1\n")
    (tmp / "range.csv").write_text("0,0\n1,40\n")
    (tmp / "neg.csv").write_text("0,0\n-1,1\n")
    (tmp / "threecol.csv").write_text("0,0,0\n")
    (tmp / "text.csv").write_text("i,j\n0,0\nx,y\n")
    for name in ("dup.csv", "dupcol2.csv", "unsorted.csv", "range.csv", "neg.csv", "threecol.csv", "text.csv"):
        out[name.replace(".", "_")] = str(tmp / name)
    # projector checkpoints
    (tmp / "junk.pt").write_bytes(b"\x00garbage" * 10)
    (tmp / "empty.pt").write_bytes(b"")
    import torch

    torch.save({"hello": 1}, tmp / "foreign.pt")
    for name in ("junk.pt", "empty.pt", "foreign.pt"):
        out[name.replace(".", "_")] = str(tmp / name)
    out["nopt"] = str(tmp / "nope.pt")
    # YAML
    (tmp / "bad.yaml").write_text("name: x\nfeatures: [unclosed\n  - : :\n")
    (tmp / "list.yaml").write_text("- a\n- b\n")
    (tmp / "empty.yaml").write_text("")
    (tmp / "unknown.yaml").write_text(
        f"name: t\nfeatures:\n  a: {{file: {out['X']}}}\n  b: {{file: {out['Y']}}}\npairs: [[a, b]]\n"
        "matching:\n  methods: [nosuch]\n  n_seeds: [5]\n  n_query: 5\n  n_splits: 1\n")
    for name in ("bad.yaml", "list.yaml", "empty.yaml", "unknown.yaml"):
        out[name.replace(".", "_")] = str(tmp / name)
    out["noyaml"] = str(tmp / "nope.yaml")
    # unreadable meshes / point clouds (each folder also holds one good mesh) and an unreadable image
    good_off = "OFF\n4 1 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n"
    for name, content in (("bad.off", "OFF\n3 1 0\n0 0 0\n1 0\n"), ("bad.ply", "ply\nformat ascii 1.0\nend_header\n"),
                          ("bad.obj", "v 0 0\nv 1 1\nv 2 2\n"), ("bad.txt", "1 2\n3 4\n5 6\n"),
                          ("bad.npy", "junk")):
        folder = tmp / f"mesh_{name.split('.')[1]}"
        folder.mkdir()
        (folder / "good.off").write_text(good_off)
        (folder / name).write_text(content)
        out[folder.name] = str(folder)
    (tmp / "images").mkdir()
    (tmp / "images" / "n01440764_tench.JPEG").write_bytes(b"not a jpeg")
    out["images"] = str(tmp / "images")
    (tmp / "lines.txt").write_text("a dog\na cat\n")
    out["lines"] = str(tmp / "lines.txt")
    return out


# (id, argv with {placeholders}, exit status, fragment of the error line)
CASES = [
    # ---- similarity
    ("sim-nan", "similarity {Xnan} {Y}", 1, "nan or infinite"),
    ("sim-inf", "similarity {Xinf} {Y}", 1, "nan or infinite"),
    ("sim-constant", "similarity {Xconst} {Y}", 1, "constant"),
    ("sim-mismatch", "similarity {X} {Y39}", 1, "same number of rows"),
    ("sim-1d", "similarity {X1d} {Y}", 1, "2-d"),
    ("sim-3d", "similarity {X3d} {Y}", 1, "2-d"),
    ("sim-empty", "similarity {Xempty} {Y}", 1, "row"),
    ("sim-strings", "similarity {Xstr} {Y}", 1, "dtype"),
    ("sim-unknown-metric", "similarity {X} {Y} --metric nosuch", 1, "unknown metric"),
    ("sim-missing", "similarity {missing} {Y}", 1, "does not exist"),
    ("sim-directory", "similarity {dir} {Y}", 1, "directory"),
    ("sim-trunc-npy", "similarity {trunc_npy} {Y}", 1, "truncated or corrupt"),
    ("sim-junk-npy", "similarity {junk_npy} {Y}", 1, "truncated or corrupt"),
    ("sim-empty-npy", "similarity {empty_npy} {Y}", 1, "truncated or corrupt"),
    ("sim-trunc-npz", "similarity {trunc_npz} {Y}", 1, "truncated or corrupt"),
    ("sim-npz-two-arrays", "similarity {two_npz} {Y}", 1, "pick one"),
    ("sim-npz-bad-key", "similarity {good_npz}:nokey {Y}", 1, "no array 'nokey'"),
    ("sim-trunc-safetensors", "similarity {trunc_safetensors} {Y}", 1, "could not be read"),
    ("sim-junk-safetensors", "similarity {junk_safetensors} {Y}", 1, "could not be read"),
    ("sim-csv", "similarity {X_csv} {Y}", 1, "unknown suffix"),
    ("sim-small-n", "similarity {X3} {Y3} --metric mutual_knn -p k=10", 1, "k"),
    ("sim-knn-k-equals-n", "similarity {X3} {Y3} --metric cycle_knn --k 3", 1, "n - 1 = 2"),
    ("sim-knn-k-zero", "similarity {X} {Y} --metric mutual_knn --k 0", 1, "`k` must be >= 1"),
    ("sim-int-dtype-ok-but-constant", "similarity {Xconstint} {Y}", 1, "constant"),
    ("sim-cca-small-n", "similarity {X3} {Y3} --metric svcca", 1, "more items than kept dimensions"),
    ("sim-bad-sigma", "similarity {X} {Y} --metric rbf_cka --sigma -1", 1, "sigma"),
    ("sim-bad-param", "similarity {X} {Y} -p nosuch=1", 1, "nosuch"),
    ("sim-reserved-device", "similarity {X} {Y} -p device=cpu", 2, "use --device"),
    ("sim-reserved-batch", "similarity {X} {Y} -p batch_size=3", 2, "use --chunk-size"),
    ("sim-bad-kv", "similarity {X} {Y} -p novalue", 2, "key=value"),
    ("sim-one-file", "similarity {X}", 2, "two feature files"),
    ("sim-negative-null", "similarity {X} {Y} --null -1", 2, "--null"),
    # ---- match
    ("match-nan", "match {Xnan} {Y} --n-seeds 5 --n-query 5 --splits 1", 1, "nan or infinite"),
    ("match-mismatch", "match {X} {Y39} --n-seeds 5 --n-query 5 --splits 1", 1, "rows"),
    ("match-1d", "match {X1d} {Y} --n-seeds 5 --n-query 5 --splits 1", 1, "2-d"),
    ("match-empty", "match {Xempty} {Y} --n-seeds 5 --n-query 5 --splits 1", 1, "row"),
    ("match-too-few", "match {X} {Y} --n-known 30 --n-query 30 --splits 1", 1, "n_known"),
    ("match-constant", "match {Xconst} {Y} --n-seeds 5 --n-query 5 --splits 1", 1, "constant"),
    ("match-constant-seeds", "match {X} {Xconst} --seeds {unsorted_csv}", 1, "constant"),
    ("match-3d", "match {X3d} {Y} --n-seeds 5 --n-query 5 --splits 1", 1, "2-d"),
    ("match-more-seeds-than-items", "match {X3} {Y3} --method procrustes --seeds {unsorted_csv}", 1,
     "cannot be more known pairs"),
    ("match-zero-seeds-anchor", "match {X} {Y} --method procrustes --n-seeds 0 --n-query 5 --splits 1", 1,
     "at least 2 known pairs"),
    ("match-unknown-method", "match {X} {Y} --method nosuch", 1, "unknown method"),
    ("match-unknown-kernel", "match {X} {Y} --kernel nosuch --n-seeds 5 --n-query 5 --splits 1", 1, "kernel"),
    ("match-seeds-dup", "match {X} {Y} --seeds {dup_csv}", 1, "duplicates"),
    ("match-seeds-dup-col2", "match {X} {Y} --seeds {dupcol2_csv}", 1, "duplicates"),
    ("match-seeds-range", "match {X} {Y} --seeds {range_csv}", 1, "must index rows"),
    ("match-seeds-negative", "match {X} {Y} --seeds {neg_csv}", 1, "must index rows"),
    ("match-seeds-3col", "match {X} {Y} --seeds {threecol_csv}", 1, "two columns"),
    ("match-seeds-text", "match {X} {Y} --seeds {text_csv}", 1, "two integers"),
    ("match-seeds-missing", "match {X} {Y} --seeds {missing}", 1, "does not exist"),
    ("match-reserved-rng", "match {X} {Y} -p rng=3", 2, "use --seed"),
    ("match-reserved-n-seeds", "match {X} {Y} -p n_seeds=3", 2, "use --n-known"),
    ("match-bad-param", "match {X} {Y} -p nosuch=3 --n-seeds 5 --n-query 5 --splits 1", 1, "nosuch"),
    ("match-trunc", "match {trunc_npy} {Y}", 1, "truncated or corrupt"),
    # ---- fit
    ("fit-unknown-kind", "fit --kind nosuch --x {X} --y {Y} --out {tmp}/p.pt", 1, "unknown"),
    ("fit-nan", "fit --kind linear --x {Xnan} --y {Y} --out {tmp}/p.pt", 1, "nan or infinite"),
    ("fit-mismatch", "fit --kind linear --x {X} --y {Y39} --out {tmp}/p.pt", 1, "same number of rows"),
    ("fit-1d", "fit --kind linear --x {X1d} --y {Y} --out {tmp}/p.pt", 1, "2-d"),
    ("fit-3d", "fit --kind linear --x {X3d} --y {Y} --out {tmp}/p.pt", 1, "2-d"),
    ("fit-empty", "fit --kind linear --val-fraction 0 --x {Xempty} --y {Xempty} --out {tmp}/p.pt", 1, "row"),
    ("fit-val-negative", "fit --kind linear --x {X} --y {Y} --val-fraction -0.1 --out {tmp}/p.pt", 2,
     "--val-fraction"),
    ("fit-val-one", "fit --kind linear --x {X} --y {Y} --val-fraction 1 --out {tmp}/p.pt", 2, "--val-fraction"),
    ("fit-reserved-kind", "fit --kind linear --x {X} --y {Y} -p kind=mlp --out {tmp}/p.pt", 2, "use --kind"),
    ("fit-reserved-rng", "fit --kind mlp --x {X} --y {Y} -p rng=3 --out {tmp}/p.pt", 2, "use --seed"),
    ("fit-out-directory", "fit --kind linear --x {X} --y {Y} --out {tmp}", 1, "is a directory"),
    ("fit-cca-small-n", "fit --kind cca --x {X3} --y {Y3} --val-fraction 0 --out {tmp}/p.pt", 1, "n_components"),
    ("fit-groups-float", "fit --kind linear --x {X} --y {Y} --groups {Y} --out {tmp}/p.pt", 1, "--groups"),
    ("fit-bad-param", "fit --kind linear --x {X} --y {Y} -p nosuch=1 --out {tmp}/p.pt", 1, "nosuch"),
    ("fit-trunc", "fit --kind linear --x {trunc_npz} --y {Y} --out {tmp}/p.pt", 1, "truncated or corrupt"),
    ("fit-epochs-closed-form", "fit --kind procrustes --x {X} --y {Y} --epochs 3 --out {tmp}/p.pt", 2,
     "trained kinds"),
    ("fit-unknown-loss", "fit --kind mlp --x {X} --y {Y} --loss nosuch --out {tmp}/p.pt", 2, "--loss"),
    # ---- retrieve
    ("retrieve-missing-projector", "retrieve --projector {nopt} --x {X} --y {Y}", 1, "does not exist"),
    ("retrieve-junk-projector", "retrieve --projector {junk_pt} --x {X} --y {Y}", 1, "truncated or corrupt"),
    ("retrieve-empty-projector", "retrieve --projector {empty_pt} --x {X} --y {Y}", 1, "truncated or corrupt"),
    ("retrieve-foreign-projector", "retrieve --projector {foreign_pt} --x {X} --y {Y}", 1,
     "not a unialign projector"),
    ("retrieve-wrong-dim", "retrieve --projector {proj} --x {Ywide} --y {Y}", 1, "features"),
    ("retrieve-wrong-dim-y", "retrieve --projector {proj} --x {X} --y {Ywide}", 1, "features"),
    ("retrieve-bad-ks", "retrieve --projector {proj} --x {X} --y {Y} --ks 1,a", 2, "--ks"),
    ("retrieve-nan", "retrieve --projector {proj} --x {Xnan} --y {Y}", 1, "nan or infinite"),
    ("retrieve-positives-range", "retrieve --projector {proj} --x {X} --y {Y} --positives {pos}", 1,
     "must index gallery rows"),
    ("retrieve-not-a-projector", "retrieve --projector {X} --x {X} --y {Y}", 1, "holds features or json, not a projector"),
    ("retrieve-npz-as-projector", "retrieve --projector {good_npz} --x {X} --y {Y}", 1, "not a projector"),
    ("retrieve-ks-beyond-gallery", "retrieve --projector {proj} --x {X} --y {Y} --ks 1,100", 1,
     "larger than the gallery --y of 40 items"),
    ("retrieve-ks-zero", "retrieve --projector {proj} --x {X} --y {Y} --ks 0", 2, "positive integers"),
    ("retrieve-strings", "retrieve --projector {proj} --x {Xstr} --y {Y}", 1, "dtype"),
    ("retrieve-1d", "retrieve --projector {proj} --x {X1d} --y {Y}", 1, "2-d"),
    # ---- embed
    ("embed-unknown-encoder", "embed --encoder nosuch --dataset text:{lines}", 1, "unknown encoder"),
    ("embed-unknown-prefix", "embed --encoder zzz:thing --dataset text:{lines}", 1, "unknown encoder"),
    ("embed-unknown-dataset", "embed --encoder file:{X} --dataset zzz:thing", 1, "unknown dataset"),
    ("embed-bad-out", "embed --encoder file:{X} --dataset text:{lines} --out {tmp}/x.csv", 1, "--out"),
    ("embed-file-encoder-missing", "embed --encoder file:{missing} --dataset text:{lines}", 1, "does not exist"),
    ("embed-bad-off", "embed --encoder shape:d2 --dataset pointcloud:{mesh_off} --no-progress", 1, "malformed off"),
    ("embed-bad-ply", "embed --encoder shape:d2 --dataset pointcloud:{mesh_ply} --no-progress", 1, "no vertex element"),
    ("embed-bad-obj", "embed --encoder shape:d2 --dataset pointcloud:{mesh_obj} --no-progress", 1, "needs x y z"),
    ("embed-bad-xyz", "embed --encoder shape:d2 --dataset pointcloud:{mesh_txt} --no-progress", 1, "not 3"),
    ("embed-bad-points-npy", "embed --encoder shape:d2 --dataset pointcloud:{mesh_npy} --no-progress", 1,
     "not a readable .npy"),
    ("embed-unreadable-image", "embed --encoder efficientnet-lite0 --dataset imagefolder:{images} --no-progress", 1,
     "cannot read image"),
    # ---- select
    ("select-one-candidate", "select --dataset text:{lines} --features a={X}", 2, "at least two"),
    ("select-wrong-rows", "select --dataset text:{lines} --features a={X} --features b={Y}", 1, "rows"),
    ("select-unknown-metric", "select --dataset text:{lines} --features a={X2} --features b={Y2} --metric nosuch",
     1, "unknown metric"),
    # ---- zeroshot
    ("zeroshot-missing-projector", "zeroshot --projector {nopt} --images {tmp}", 1, "does not exist"),
    ("zeroshot-wrong-encoder", "zeroshot --projector {proj} --images {tmp} --encoder file:{Ywide}", 1,
     "projector takes 6-d inputs"),
    ("zeroshot-junk-projector", "zeroshot --projector {junk_pt} --images {tmp}", 1, "truncated or corrupt"),
    # ---- run
    ("run-missing", "run {noyaml}", 1, "does not exist"),
    ("run-malformed-yaml", "run {bad_yaml}", 1, "yaml"),
    ("run-yaml-list", "run {list_yaml}", 1, "the experiment file: must be a mapping"),
    ("run-yaml-empty", "run {empty_yaml}", 1, "required"),
    ("run-unknown-method", "run {unknown_yaml} --check", 1, "nosuch"),
    # ---- usage
    ("unknown-command", "nosuch", 2, "no such command"),
    ("unknown-option", "similarity --nosuch", 2, "no such option"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reliability")
    out = _files(tmp)
    out["tmp"] = str(tmp)
    proj = tmp / "proj.pt"
    result = CliRunner().invoke(main, ["fit", "--kind", "linear", "--x", out["X"], "--y", out["Y"],
                                       "--val-fraction", "0", "--out", str(proj)])
    assert result.exit_code == 0, result.output
    out["proj"] = str(proj)
    return out


@pytest.mark.parametrize("argv, status, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_one_line(files, tmp_path, argv, status, fragment):
    args = [a.format(**files) for a in argv.split()]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == status, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.output
    if status == 1:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, result.stderr
        assert fragment.lower() in errors[0].lower(), errors[0]
    else:  # click's usage message ends with one "Error: …" line
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, result.stderr
        assert fragment.lower() in errors[0].lower(), errors[0]
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def test_bad_input_leaves_no_output(files, tmp_path):
    """A rejected fit writes nothing under --out."""
    out = tmp_path / "p.pt"
    result = CliRunner().invoke(main, ["fit", "--kind", "linear", "--x", files["Xnan"], "--y", files["Y"],
                                       "--out", str(out)])
    assert result.exit_code == 1 and not out.exists() and list(tmp_path.iterdir()) == []


def test_integer_features_and_unsorted_seeds_are_accepted(files):
    """Not every odd input is an error: integer arrays are read as float, seed pairs need no order."""
    result = CliRunner().invoke(main, ["similarity", files["Xint"], files["Y"]])
    assert result.exit_code == 0, result.stderr
    result = CliRunner().invoke(main, ["match", files["X"], files["X"], "--method", "faq", "--seeds",
                                       files["unsorted_csv"]])
    assert result.exit_code == 0, result.stderr
    col_ind = json.loads(result.stdout)["col_ind"]
    assert [col_ind[i] for i in (5, 2, 9, 1)] == [5, 2, 9, 1]
