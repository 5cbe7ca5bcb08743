"""The benchmark runner (``python -m benchmarks``): quick mode end to end, README tables, and the harness."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `benchmarks` is not installed with the package; it runs from the repository root

from benchmarks import _harness  # noqa: E402
from benchmarks.__main__ import SUITES, fmt, main, replace_between_markers  # noqa: E402

MB200 = 25_000_000  # float64 elements: 200 MB (190.7 MiB)


# ---------------------------------------------------------------- quick run, end to end --------------------------


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict:
    """``python -m benchmarks run --quick`` once, as CI runs it. Without UNIALIGN_DATA the real-data suite records a
    skip (its own tests cover it) and extraction renders its photos, so the run stays within about a minute."""
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "quick.json"
    env = {k: v for k, v in os.environ.items() if k not in ("UNIALIGN_DATA", "UNIALIGN_FEATURES")}
    env["UNIALIGN_CACHE"] = str(tmp / "cache")
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--quick", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"doc": json.loads(out.read_text()), "path": out, "stdout": proc.stdout}


@pytest.mark.slow
def test_quick_run_reports_every_suite(quick):
    doc = quick["doc"]
    assert doc["mode"] == "quick" and doc["command"].startswith("python -m benchmarks run --quick")
    m = doc["machine"]
    for key in ("cpu", "logical_cores", "affinity_cores", "ram_gb", "load_before", "load_after", "os", "versions",
                "threads", "git"):
        assert key in m, key
    assert m["threads"]["OMP_NUM_THREADS"] == "1" and m["versions"]["numpy"] == np.__version__
    for suite in SUITES:
        rows = [r for r in doc["rows"] if r["suite"] == suite]
        measured = [r for r in rows if not _harness.skip_reason(r) and r.get("status") != "error"]
        skipped = [_harness.skip_reason(r) for r in rows if _harness.skip_reason(r)]
        assert measured or (skipped and all(skipped)), f"{suite}: no rows and no skip with a reason"
        assert not [r for r in rows if r.get("status") == "error"], f"{suite} failed: {rows}"
        assert all(r.get("command") for r in rows if "status" not in r)  # every measured row names its command
    assert all(c["status"] in ("ok", "skipped") for c in doc["cases"])
    # rows are what the scripts printed, plus suite and command
    printed = [json.loads(line) for line in quick["stdout"].splitlines() if line.startswith("{")]
    assert len(printed) == len(doc["rows"])
    # the owned suites measure through the harness: medians and peak memory
    ex = next(r for r in doc["rows"] if r["suite"] == "extraction")
    assert ex["bare_peak_mb"] is not None and ex["throughput_ratio"] == pytest.approx(
        ex["bare_forward_s"] / ex["end_to_end_s"], rel=0.02)
    pr = [r for r in doc["rows"] if r["suite"] == "projectors"]
    assert {r["kind"] for r in pr} == {"linear", "mlp"} and all(r["peak_mb"] is not None for r in pr)


def _block(text: str, suite: str) -> str:
    return re.search(rf"<!-- generated:{suite}:begin -->\n(.*?)<!-- generated:{suite}:end -->", text, re.DOTALL)[1]


@pytest.mark.slow
def test_tables_rewrite_only_between_markers_and_are_idempotent(quick, tmp_path, capsys):
    readme = tmp_path / "README.md"
    original = (ROOT / "benchmarks" / "README.md").read_text()
    readme.write_text(original)
    assert main(["tables", str(quick["path"]), "--readme", str(readme)]) == 0
    once = readme.read_text()
    assert main(["tables", str(quick["path"]), "--readme", str(readme)]) == 0
    assert readme.read_text() == once  # idempotent

    def outside(text):
        return re.sub(r"(<!-- generated:(\w+):begin -->\n).*?(<!-- generated:\2:end -->)", r"\1\3", text,
                      flags=re.DOTALL)

    assert outside(once) == outside(original)  # nothing outside the markers changed
    for suite in SUITES:
        block = _block(once, suite)
        assert "python -m benchmarks run --quick" in block and "Machine: " in block
        rows = [r for r in quick["doc"]["rows"] if r["suite"] == suite]
        if any(not _harness.skip_reason(r) for r in rows if "metric" in r or "section" in r or "task" in r):
            assert "|---|" in block, f"{suite}: no table"
    sim = _block(once, "similarity")
    assert "gram_f32 / unialign" in sim and "×" in sim  # peer / ours ratios


def test_tables_without_markers_names_the_fix(tmp_path, capsys):
    results = _harness.write_results(tmp_path / "r.json", machine=_harness.machine(), command="c", mode="quick",
                                     started="t", rows=[{"suite": "extraction", "benchmark": "extraction", "n": 1}])
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert main(["tables", str(results), "--readme", str(readme)]) == 1  # bad input: 1, as the CLI's convention
    assert "<!-- generated:extraction:begin -->" in capsys.readouterr().err
    assert readme.read_text() == "# no markers\n"


def test_tables_on_missing_files_is_one_line_and_status_1(tmp_path, capsys):
    assert main(["tables", str(tmp_path / "none.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: results file") and "python -m benchmarks run" in err[0]
    results = _harness.write_results(tmp_path / "r.json", machine=_harness.machine(), command="c", mode="quick",
                                     started="t", rows=[{"suite": "extraction", "benchmark": "extraction", "n": 1}])
    assert main(["tables", str(results), "--readme", str(tmp_path / "NOPE.md")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NOPE.md" in err[0] and "does not exist" in err[0]
    assert not (tmp_path / "NOPE.md").exists()


def test_bad_threads_is_a_usage_error_not_a_traceback():
    from benchmarks.__main__ import _early_threads

    assert _early_threads(["run", "--quick"]) == 1
    assert _early_threads(["run", "--threads", "3"]) == 3 and _early_threads(["run", "--threads=2"]) == 2
    assert _early_threads(["run", "--threads", "x"]) is None and _early_threads(["run", "--threads=0"]) is None
    for bad in ("x", "0", "-2"):
        proc = subprocess.run([sys.executable, "-m", "benchmarks", "run", "--quick", "--threads", bad], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "usage: python -m benchmarks run" in proc.stderr and f"--threads: must be an int >= 1, got '{bad}'" \
            in proc.stderr, proc.stderr


# ---------------------------------------------------------------- harness ----------------------------------------


class _FakeClock:
    """Stands in for the ``time`` module the harness reads: the measured call advances it by known amounts."""

    def __init__(self):
        self.wall, self.cpu, self.children = 1000.0, 50.0, 7.0

    def perf_counter(self) -> float:
        return self.wall

    def process_time(self) -> float:
        return self.cpu

    def advance(self, wall: float, cpu: float, children: float = 0.0) -> None:
        self.wall += wall
        self.cpu += cpu
        self.children += children


@pytest.fixture
def clock(monkeypatch) -> _FakeClock:
    fake = _FakeClock()
    monkeypatch.setattr(_harness, "time", fake)
    monkeypatch.setattr(_harness, "_children_cpu", lambda: fake.children)
    return fake


def test_measure_reports_median_of_timed_repeats_and_skips_warmup(clock):
    # (wall, cpu, children's cpu) seconds of each call: two warm-ups, then three timed repeats
    costs = iter([(100.0, 100.0, 100.0), (100.0, 100.0, 100.0), (5.0, 0.5, 1.0), (2.0, 0.25, 3.0), (3.0, 2.0, 2.0)])
    calls = []

    def fn():
        calls.append(1)
        clock.advance(*next(costs))
        return len(calls)

    m = _harness.measure(fn, repeats=3, warmup=2)
    assert len(calls) == 5 and m.result == 5  # warm-up calls run but are not timed; result of the last call
    assert m.wall_times == (5.0, 2.0, 3.0) and m.cpu_times == (0.5, 0.25, 2.0)  # the warm-ups' 100 s are not in
    assert m.wall_s == 3.0 and m.cpu_s == 0.5 and m.children_cpu_s == 2.0  # medians, each clock on its own
    assert m.repeats == 3 and m.warmup == 2
    d = m.to_dict("ours_")
    assert d["ours_wall_s"] == 3.0 and d["ours_cpu_s"] == 0.5 and "result" not in str(d.keys())


def test_measure_keeps_wall_and_cpu_time_apart(clock):
    sleeping = _harness.measure(lambda: clock.advance(wall=4.0, cpu=0.0), repeats=1, warmup=0)
    assert sleeping.wall_s == 4.0 and sleeping.cpu_s == 0.0  # waiting costs no CPU time
    busy = _harness.measure(lambda: clock.advance(wall=1.0, cpu=3.0), repeats=2, warmup=0)
    assert busy.wall_times == (1.0, 1.0) and busy.cpu_times == (3.0, 3.0)  # threads: CPU time above wall time


def test_measure_rejects_bad_repeats():
    with pytest.raises(ValueError, match="`repeats` must be an int >= 1"):
        _harness.measure(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="`warmup` must be an int >= 0"):
        _harness.measure(lambda: None, warmup=-1)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_peak_memory_sees_a_200mb_allocation():
    kept = _harness.measure(lambda: np.ones(MB200), repeats=1, warmup=0)
    assert kept.peak_mb >= 180, kept.peak_mb
    del kept
    transient = _harness.measure(lambda: float(np.ones(MB200).sum()), repeats=2, warmup=0)  # freed before return
    assert transient.peak_mb >= 180, transient.peak_mb
    small = _harness.measure(lambda: np.ones(1000).sum(), repeats=1, warmup=1)
    assert small.peak_mb < 20, small.peak_mb


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_peak_memory_counts_memory_an_earlier_call_freed():
    """Many 1 MB blocks: once freed, glibc keeps them in its heap; each call must still show its ~200 MB."""
    import torch

    def blocks():
        return len([torch.ones(256, 1024) for _ in range(200)])

    peaks = [_harness.measure(blocks, repeats=1, warmup=0).peak_mb for _ in range(3)]
    assert min(peaks) >= 150, peaks


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs /proc/self/clear_refs (Linux)")
def test_emit_interval_sees_memory_between_rows(capsys):
    _harness.mark_interval()
    if "rss" not in _harness._MARK:
        pytest.skip("the kernel refuses to reset VmHWM here")
    a = np.ones(MB200)
    del a
    with _harness.collecting() as rows:
        _harness.emit_interval("demo", x=1)
        _harness.emit_interval("demo", x=2)  # nothing allocated since the previous row
    assert rows[0]["interval_peak_mb"] >= 180 and rows[1]["interval_peak_mb"] < 20
    assert json.loads(capsys.readouterr().out.splitlines()[0]) == {"x": 1, "interval_peak_mb":
                                                                   rows[0]["interval_peak_mb"]}


def test_emit_collects_rows_with_suite_and_prints_the_row(capsys):
    assert _harness.rows() is None
    _harness.emit("demo", a=np.float64(1.5))  # outside collecting: printed only
    with _harness.collecting() as rows:
        _harness.emit("demo", a=np.int64(2), b=np.arange(2))
        with _harness.collecting() as inner:
            _harness.skip("demo", "no GPU here")
        assert inner is rows
    assert _harness.rows() is None
    assert rows == [{"suite": "demo", "a": 2, "b": [0, 1]},
                    {"suite": "demo", "status": "skipped", "reason": "no GPU here"}]
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[0] == {"a": 1.5} and out[1] == {"a": 2, "b": [0, 1]}


def test_skip_reason_reads_every_suites_spelling():
    assert _harness.skip_reason({"status": "skipped", "reason": "no data"}) == "no data"
    assert _harness.skip_reason({"impl": "repsim", "skipped": "n > 2000"}) == "n > 2000"
    assert "graspologic" in _harness.skip_reason({"note": "graspologic skipped: no peer interpreter"})
    assert _harness.skip_reason({"note": "repsim rows only in --full"}) is None
    assert _harness.skip_reason({"seconds": 1.0}) is None


def test_results_file_is_written_atomically(tmp_path):
    path = tmp_path / "r.json"
    _harness.write_results(path, machine={"cpu": "x"}, command="python -m benchmarks run --quick", mode="quick",
                           started="t0", rows=[{"suite": "s", "v": np.float32(0.5)}])
    doc = _harness.read_results(path)
    assert doc["rows"] == [{"suite": "s", "v": 0.5}] and doc["machine"] == {"cpu": "x"}
    before = path.read_bytes()

    class Unwritable:
        def __repr__(self):
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError, match="cannot serialise"):
        _harness.write_results(path, machine={}, command="c", mode="quick", started="t1",
                               rows=[{"suite": "s", "v": Unwritable()}])
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temporary file left behind


def test_read_results_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m benchmarks run --out"):
        _harness.read_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    with pytest.raises(ValueError, match="lacks machine/command/rows"):
        _harness.read_results(bad)


def test_machine_describes_this_process():
    m = _harness.machine()
    assert m["logical_cores"] == os.cpu_count() and m["python"] == ".".join(map(str, sys.version_info[:3]))
    assert m["versions"]["numpy"] == np.__version__
    line = _harness.describe(m)
    assert "cores" in line and "numpy " + np.__version__ in line


def test_cell_format_and_marker_replacement():
    assert fmt("scipy_over_ours", 2.345) == "2.35×" and fmt("speedup", 10.0) == "10.00×"
    assert fmt("peak_mb", 12.345) == "12.3" and fmt("abs_error_vs_unialign", 6.3e-06) == "6.3e-06"
    assert fmt("rows_per_s", 31853.6) == "31,854" and fmt("x", None) == "—" and fmt("a|b", "a|b") == "a\\|b"
    text = "head\n<!-- generated:s:begin -->\nold\n<!-- generated:s:end -->\ntail\n"
    assert replace_between_markers(text, "s", "new\n") == \
        "head\n<!-- generated:s:begin -->\nnew\n<!-- generated:s:end -->\ntail\n"
    with pytest.raises(ValueError, match="generated:t:begin"):
        replace_between_markers(text, "t", "new\n")
