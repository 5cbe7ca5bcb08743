"""What a terminal user reads: did-you-mean hints, one-line warnings, no third-party progress bars unless -v."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import matching
import projectors
from align import _console
from align._validation import check_choice, did_you_mean
from align.encoders import load_encoder
from align.similarity import list_metrics, similarity

ROOT = Path(__file__).resolve().parents[2]


# ---- did you mean -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("typed, first", [
    ("cka", "linear_cka"),          # a whole-word suffix beats difflib's 'cknna'
    ("CKA", "linear_cka"),
    ("Linear-CKA", "linear_cka"),   # case and dash
    ("linear", "linear_cka"),
    ("knn", "mutual_knn"),
    ("unbiased", "unbiased_cka"),
    ("linear_cka2", "linear_cka"),  # the name inside what was typed
    ("kernel_cka", "linear_cka"),   # the same last word
    ("linear_ckaa", "linear_cka"),  # a typo
])
def test_metric_suggestions(typed, first):
    assert did_you_mean(typed, list_metrics())[0] == first
    x = np.random.default_rng(0).normal(size=(30, 4))
    with pytest.raises(ValueError, match=f"unknown metric {typed!r}.*did you mean {first!r}") as err:
        similarity(x, x, typed)
    assert "\n" not in str(err.value)


def test_cka_lists_the_cka_metrics_and_not_cknna():
    close = did_you_mean("cka", list_metrics())
    assert close == ["linear_cka", "rbf_cka", "unbiased_cka"] and "cknna" not in close
    x = np.random.default_rng(0).normal(size=(30, 4))
    with pytest.raises(ValueError, match=r"did you mean 'linear_cka' \(or 'rbf_cka', 'unbiased_cka'\)\?$"):
        similarity(x, x, "cka")


@pytest.mark.parametrize("typed, first", [("cka", "local_cka"), ("entropic", "entropic_gw"), ("fused", "fused_gw"),
                                          ("procrust", "procrustes"), ("faqq", "faq"), ("lsq", "lstsq")])
def test_method_suggestions(typed, first):
    x = np.random.default_rng(0).normal(size=(12, 3))
    with pytest.raises(ValueError, match=f"unknown method {typed!r}.*did you mean {first!r}"):
        matching.match(x, x, typed)


@pytest.mark.parametrize("typed, first", [("lin", "linear"), ("MLP", "mlp"), ("mlp2", "mlp"), ("procrust", "procrustes"),
                                          ("linear_ridge", "linear")])
def test_kind_suggestions(typed, first):
    with pytest.raises(ValueError, match=f"unknown projector kind {typed!r}.*did you mean {first!r}"):
        projectors.make_projector(typed)


@pytest.mark.parametrize("typed, first", [("e5", "e5-small"), ("e5_small", "e5-small"), ("MiniLM", "minilm"),
                                          ("mini-lm", "minilm"), ("efficientnet", "efficientnet-lite0"),
                                          ("timm/resnet50", "timm:")])
def test_encoder_suggestions(typed, first):
    with pytest.raises(ValueError, match=f"unknown encoder spec {typed!r}.*did you mean {first!r}"):
        load_encoder(typed)


def test_no_suggestion_when_nothing_is_close():
    assert did_you_mean("sinkhorn", matching.list_methods()) == []
    assert did_you_mean("", ["a", "b"]) == []
    with pytest.raises(ValueError) as err:
        check_choice("method", "zzz", ("faq", "gw"))
    assert "did you mean" not in str(err.value)


def test_short_input_is_not_matched_as_a_substring():
    # one or two letters are inside many names: only whole words and typos count
    assert did_you_mean("a", ["asif", "faq", "gw"]) == []
    assert did_you_mean("gw", ["gw", "entropic_gw"]) == ["gw"]


# ---- warnings and logs ----------------------------------------------------------------------------------------------
def test_warning_is_one_line_without_source_path(capsys):
    restore = _console.install(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _console._show_warning  # catch_warnings saved the installed one; keep it
            warnings.warn("first line\n   second line", UserWarning)
    finally:
        restore()
    err = capsys.readouterr().err
    assert err == "warning: first line second line\n"
    assert warnings.showwarning is not _console._show_warning  # restored


def test_warning_log_record_is_one_line():
    fmt = _console._Formatter()
    rec = logging.LogRecord("align.x", logging.WARNING, __file__, 1, "careful:\n%s", ("really",), None)
    assert fmt.format(rec) == "warning: careful: really"
    rec = logging.LogRecord("align.x", logging.INFO, __file__, 1, "step %d", (3,), None)
    assert fmt.format(rec) == "INFO align.x: step 3"


def test_install_silences_hf_progress_bars_and_restores_them(monkeypatch):
    tf = pytest.importorskip("transformers.utils.logging")
    monkeypatch.delenv(_console._HF_BARS_ENV, raising=False)
    with warnings.catch_warnings():  # huggingface_hub may refuse ("has priority"): only transformers' flag matters
        warnings.simplefilter("ignore")
        tf.enable_progress_bar()  # as a fresh process has it (an earlier in-process command may have left it off)
    before = _console._hf_state()
    restore = _console.install(0)
    try:
        assert os.environ[_console._HF_BARS_ENV] == "1"
        assert _console._hf_state() == (False, False)
        assert not tf.is_progress_bar_enabled()
    finally:
        restore()
    assert _console._HF_BARS_ENV not in os.environ
    assert _console._hf_state() == before and tf.is_progress_bar_enabled()
    restore = _console.install(1)  # -v: third-party bars stay
    try:
        assert _console._HF_BARS_ENV not in os.environ and tf.is_progress_bar_enabled()
    finally:
        restore()


def test_user_setting_of_hf_bars_is_kept(monkeypatch):
    monkeypatch.setenv(_console._HF_BARS_ENV, "0")
    _console.install(0)()
    assert os.environ[_console._HF_BARS_ENV] == "0"


def _cli(*args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="", **(env_extra or {}))
    env.pop(_console._HF_BARS_ENV, None)
    return subprocess.run([sys.executable, "-m", "align.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300, check=False)


def test_cli_biased_cka_warning_is_one_line(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(20, 50)))
    np.save(tmp_path / "y.npy", rng.normal(size=(20, 40)))
    proc = _cli("similarity", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: linear_cka is biased upward"), proc.stderr
    assert ".py" not in proc.stderr and "UserWarning" not in proc.stderr


def test_cli_embed_shows_no_third_party_bar_unless_verbose(tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("a dog\na cat\n")
    quiet = _cli("embed", "--encoder", "minilm", "--dataset", f"text:{texts}", "--no-progress",
                 "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "q.npy"))
    assert quiet.returncode == 0, quiet.stderr
    assert "Loading weights" not in quiet.stderr and "%|" not in quiet.stderr, quiet.stderr
    loud = _cli("-v", "embed", "--encoder", "minilm", "--dataset", f"text:{texts}", "--no-progress",
                "--cache-dir", str(tmp_path / "c2"), "--out", str(tmp_path / "v.npy"))
    assert loud.returncode == 0, loud.stderr
    assert "Loading weights" in loud.stderr  # the bar is there to silence: this test can fail


def test_fit_shows_one_progress_line_per_epoch_on_stderr(tmp_path):
    from click.testing import CliRunner

    from align.cli import main

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", (X @ rng.normal(size=(8, 6))).astype(np.float32))
    args = ["fit", "--kind", "mlp", "--epochs", "3", "--x", str(tmp_path / "x.npy"), "--y", str(tmp_path / "y.npy"),
            "--out", str(tmp_path / "p.pt")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("fit: epoch")]
    assert [ln.split(",")[0] for ln in lines] == ["fit: epoch 0", "fit: epoch 1", "fit: epoch 2"], r.stderr
    assert all("loss" in ln and "val R@1" in ln for ln in lines)
    assert logging.getLogger("projectors.trainer").propagate  # restored after the command
    r = CliRunner().invoke(main, ["similarity", str(tmp_path / "x.npy"), str(tmp_path / "x.npy")])
    assert r.exit_code == 0 and "fit:" not in r.stderr  # only fit reports epochs
