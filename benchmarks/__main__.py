"""``python -m benchmarks``: run the benchmark suites into one JSON file, and turn that file into README tables.

    python -m benchmarks run --quick --out quick.json                  # every suite's smoke case (CI; ~1 min)
    python -m benchmarks run --full --suite extraction --out full.json # the README tables of one suite
    python -m benchmarks run --gpu --out gpu.json                      # CUDA cases; a skip row without CUDA
    python -m benchmarks tables full.json --readme benchmarks/README.md

``run`` calls each suite script's ``main(argv)`` in this process, one case after another, with the thread
variables pinned (``--threads``, default 1) before numpy and torch start; every row the scripts report through
``benchmarks._harness.emit`` is kept, tagged with the suite and the equivalent script command, and written with the
machine description to ``--out`` (atomically). A case that fails or exits non-zero becomes a ``status="error"`` row
and the run goes on; a case that cannot run here (no peer, no data, no GPU) becomes a ``status="skipped"`` row with
the reason.

In-process rather than one subprocess per suite: the quick mode must fit in CI's budget, and each fresh interpreter
pays 3-5 s of imports (torch, scipy) on a loaded machine; the scripts keep no state between calls that the runner
does not reset (torch's thread count is set again before each case). The scripts still run on their own
(``python benchmarks/bench_matching.py faq --quick``) and print the same JSON lines.

``tables`` renders one markdown table per suite and section (medians, peer/ours ratios with ×, accuracy, peak MB),
each preceded by the commands that produced its rows and a one-line machine description, and with ``--readme``
rewrites only the text between ``<!-- generated:SUITE:begin -->`` and ``<!-- generated:SUITE:end -->`` for the
suites present in the file. Tables are regenerated, never edited by hand.
"""
from __future__ import annotations

import argparse
import os
import sys


def _early_threads(argv: list[str]) -> int | None:
    """``--threads N`` from the command line, read before numpy / torch are imported (default 1); None when the
    value is not a positive integer, so that argparse, not this peek, reports it with the usage line."""
    value = "1"
    for i, a in enumerate(argv):
        if a.startswith("--threads="):
            value = a.split("=", 1)[1]
        elif a == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
    try:
        return _threads(value)
    except argparse.ArgumentTypeError:
        return None


def _threads(value: str) -> int:
    """argparse type of ``--threads``: an int >= 1."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {value!r}")
    return n


if __name__ == "__main__":  # before numpy / torch start their thread pools
    _n_threads = _early_threads(sys.argv[1:])
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        if _n_threads is not None:  # a bad value is refused by argparse below, before anything starts
            os.environ[_var] = str(_n_threads)

import dataclasses  # noqa: E402
import datetime as _dt  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks import _harness  # noqa: E402

log = logging.getLogger("benchmarks")

HERE = Path(__file__).resolve().parent
MODES = ("quick", "full", "gpu")
FEATURES_ENV = "UNIALIGN_FEATURES"
_M30K = ("m30k_train_en_minilm", "m30k_train_en_e5passage", "m30k_test_en_minilm", "m30k_test_de_e5passage",
         "m30k_test_en_e5passage", "m30k_test_de_minilm")


@dataclasses.dataclass(frozen=True)
class Case:
    """One call of a suite script: ``argv`` for its ``main``, or ``skip`` saying why it cannot run here."""

    argv: tuple[str, ...] = ()
    skip: str | None = None


def _features_dir() -> tuple[Path | None, str | None]:
    """``$UNIALIGN_FEATURES`` with the Multi30k feature files, or (None, why not)."""
    root = os.environ.get(FEATURES_ENV)
    if not root:
        return None, (f"{FEATURES_ENV} is not set: point it at a folder of Multi30k features "
                      f"({', '.join(n + '.npy' for n in _M30K)})")
    missing = [n for n in _M30K if not (Path(root) / f"{n}.npy").exists()]
    if missing:
        return None, f"{FEATURES_ENV}={root} lacks {', '.join(m + '.npy' for m in missing)}"
    return Path(root), None


def _cases_extraction(mode: str) -> list[Case]:
    if mode == "quick":
        return [Case(("--smoke", "--threads", "1"))]
    if mode == "full":
        return [Case(("--n", "512", "--repeats", "3", "--threads", t, "--workers", "1")) for t in ("1", "2")]
    return [Case(("--n", "512", "--repeats", "3", "--batch-size", "64", "--threads", "1", "--workers", "2",
                  "--device", "cuda"))]


def _cases_similarity(mode: str) -> list[Case]:
    if mode == "quick":
        return [Case(("--quick",))]
    if mode == "full":
        return [Case(("--full", "--max-kernel-n", "20000"))]
    return [Case(skip="bench_similarity.py has no --device option yet: its cases run on CPU only")]


def _cases_matching(mode: str) -> list[Case]:
    if mode == "quick":  # the script's --quick at n = 100 and 2 restarts: the CI budget
        return [Case(("faq", "--quick", "--sizes", "100", "--restarts", "2", "--goat-restarts", "1")),
                Case(("local-cka", "--quick"))]
    if mode == "gpu":
        return [Case(skip="bench_matching.py has no --device option yet: its cases run on CPU only")]
    cases = [Case(("faq", "--full")), Case(("local-cka", "--full"))]
    feats, why = _features_dir()
    if feats is None:
        cases.append(Case(skip=f"matching real: {why}"))
    else:
        cases.append(Case(("real", "--full", "--x", str(feats / "m30k_test_en_minilm.npy"),
                           "--y", str(feats / "m30k_test_de_e5passage.npy"))))
    return cases


def _cases_projectors(mode: str) -> list[Case]:
    if mode == "quick":
        return [Case(("throughput", "--n", "2048", "--dim", "64", "--batch-size", "512", "--kinds", "linear", "mlp"))]
    if mode == "gpu":
        return [Case(("throughput", "--n", "200000", "--dim", "384", "--epochs", "1", "--batch-size", "4096",
                      "--repeats", "3", "--device", "cuda"))]
    cases = [Case(("throughput", "--n", "50000", "--dim", "384", "--epochs", "1", "--batch-size", "1024",
                   "--repeats", "3"))]
    feats, why = _features_dir()
    if feats is None:
        cases.append(Case(skip=f"projectors multi30k: {why}"))
    else:
        cases.append(Case(("multi30k", "--features", str(feats), "--epochs", "30", "--patience", "4")))
    return cases


def _cases_real(mode: str) -> list[Case]:
    if mode == "gpu":
        return [Case(skip="real_data.py has no --device option yet: its cases run on CPU only")]
    return [Case((f"--{mode}",))]


#: suite name -> (module, cases(mode))
SUITES = {
    "extraction": ("benchmarks.bench_extraction", _cases_extraction),
    "similarity": ("benchmarks.bench_similarity", _cases_similarity),
    "matching": ("benchmarks.bench_matching", _cases_matching),
    "projectors": ("benchmarks.bench_projectors", _cases_projectors),
    "real": ("benchmarks.real_data", _cases_real),
}


def script_command(module: str, argv: tuple[str, ...]) -> str:
    """The equivalent stand-alone command: ``python benchmarks/bench_x.py ARGS``."""
    return shlex.join(["python", f"benchmarks/{module.rsplit('.', 1)[1]}.py", *argv])


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _run_case(suite: str, module: str, case: Case, threads: int) -> dict:
    """Call the suite's ``main(argv)`` here; its rows land in the harness collector. Returns the case summary."""
    command = script_command(module, case.argv)
    import torch

    torch.set_num_threads(threads)
    _harness.mark_interval()
    t0, c0 = time.perf_counter(), time.process_time()
    status, reason = "ok", None
    print(f"[benchmarks] {suite}: {command}", file=sys.stderr, flush=True)
    try:
        mod = importlib.import_module(module)
        rc = mod.main(list(case.argv))
    except SystemExit as exc:
        rc = exc.code
    except Exception as exc:  # a failing case is a result, not the end of the run
        traceback.print_exc()
        rc, reason = 1, f"{type(exc).__name__}: {exc}"
    if rc not in (0, None):
        status = "error"
        reason = reason or f"exited with {rc!r}"
        _harness.emit(suite, status="error", reason=reason)
    return {"suite": suite, "command": command, "status": status, "reason": reason,
            "wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - c0, 2)}


def run(args) -> int:
    mode = "quick" if args.quick else "gpu" if args.gpu else "full"
    selected = args.suite or list(SUITES)
    unknown = [s for s in selected if s not in SUITES]
    if unknown:
        raise SystemExit(f"error: unknown --suite {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    import torch

    started = _now()
    machine = _harness.machine()
    command = shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]]) if args.argv is None else \
        shlex.join(["python", "-m", "benchmarks", *args.argv])
    cases_done = []
    with _harness.collecting() as rows:
        for suite in selected:
            module, make_cases = SUITES[suite]
            first = len(rows)
            if mode == "gpu" and not torch.cuda.is_available():
                cases = [Case(skip="no CUDA device here (torch.cuda.is_available() is False)")]
            elif importlib.util.find_spec(module) is None:
                cases = [Case(skip=f"{module.replace('.', '/')}.py is not in this checkout")]
            else:
                cases = make_cases(mode)
            for case in cases:
                start = len(rows)
                if case.skip:
                    _harness.skip(suite, case.skip)
                    summary = {"suite": suite, "command": None, "status": "skipped", "reason": case.skip}
                else:
                    summary = _run_case(suite, module, case, args.threads)
                for row in rows[start:]:
                    row.setdefault("command", summary["command"])
                summary["rows"] = len(rows) - start
                cases_done.append(summary)
            if len(rows) == first:  # a suite must say something: rows or why not
                _harness.emit(suite, status="error", reason="the suite reported no rows")
        machine["load_after"] = _harness.load_average()
        _harness.write_results(args.out, machine=machine, command=command, mode=mode, started=started,
                               finished=_now(), threads=args.threads, cases=cases_done, rows=list(rows))
    bad = [c for c in cases_done if c["status"] == "error"]
    print(f"[benchmarks] {len(rows)} rows from {len(cases_done)} cases ({len(bad)} failed) -> {args.out}",
          file=sys.stderr)
    return 1 if bad else 0


# ---------------------------------------------------------------- tables -----------------------------------------

_DROP = {"suite", "command", "section", "task", "benchmark", "interval_peak_mb_first"}
_META = {"python", "torch", "threads", "mode", "numpy", "platform", "cpus"}


def _is_ratio(key: str) -> bool:
    k = key.lower()
    return "ratio" in k or "_over_" in k or "speedup" in k


def fmt(key: str, v) -> str:
    """One cell: ratios as ``1.23×``, memory in MB with one decimal, errors in e-notation, 4 significant digits."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(k, x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(key, x) for x in v)
    if isinstance(v, float):
        k = key.lower()
        if _is_ratio(k):
            return f"{v:.2f}×"
        if k.endswith("_mb"):
            return f"{v:.1f}"
        if "error" in k or "diff" in k:
            return f"{v:.1e}"
        if abs(v) >= 1e4:
            return f"{v:,.0f}"
        return f"{v:.4g}"
    if isinstance(v, int):
        return str(v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def _group(row: dict) -> str:
    for key in ("section", "task", "benchmark"):
        if isinstance(row.get(key), str):
            return row[key]
    if "impl" in row:
        return "peers"
    if "precision_n" in row:
        return "precision"
    if "streaming_n" in row:
        return "streaming"
    case = row.get("case")  # real_data.py: "multi30k/similarity", "imagenet/total", "total"
    if isinstance(case, str):
        return "totals" if case == "total" or case.endswith("/total") else case
    return "results"


def _is_meta(row: dict) -> bool:
    keys = set(row) - {"suite", "command", "interval_peak_mb"}
    return row.get("case") == "machine" or (bool(keys) and keys <= _META)


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return out


def _plain_table(rows: list[dict]) -> list[str]:
    """Columns: every key in order of first appearance; list-valued keys (per-repeat times) left out; settings
    (non-float keys) with one value in every row go to a "same in every row" line above the table."""
    keys: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in keys and k not in _DROP and not isinstance(v, list):
                keys.append(k)
    keys = [k for k in keys if any(r.get(k) is not None for r in rows)]
    const = []
    if len(rows) > 1:
        const = [k for k in keys if all(k in r and not isinstance(r[k], float) for r in rows)
                 and len({json.dumps(r[k], sort_keys=True) for r in rows}) == 1]
    cols = [k for k in keys if k not in const]
    lines = []
    if const:
        lines.append("Same in every row: " + ", ".join(f"{k} = {fmt(k, rows[0][k])}" for k in const) + ".")
        lines.append("")
    if cols:
        lines += _table(cols, [[fmt(k, r[k]) if k in r else "" for k in cols] for r in rows])
    return lines


def _pivot_table(rows: list[dict]) -> list[str]:
    """Rows with ``impl`` (one per implementation) pivoted to one line per (metric, n): unialign vs each peer."""
    impls, order = [], []
    cells: dict[tuple, dict] = {}
    for r in rows:
        key = (r.get("metric"), r.get("n"))
        if key not in cells:
            cells[key] = {}
            order.append(key)
        cells[key][r["impl"]] = r
        if r["impl"] not in impls:
            impls.append(r["impl"])
    ours = "unialign" if "unialign" in impls else impls[0]
    peers = [i for i in impls if i != ours]
    # the call's own peak where the script measured it (harness.measure), else the growth between rows
    mem_key = "peak_mb" if any(r.get("peak_mb") is not None for r in rows) else "interval_peak_mb"
    mem = any(r.get(mem_key) is not None for r in rows)
    mb = "peak MB" if mem_key == "peak_mb" else "interval peak MB"
    header = ["metric", "n", f"{ours} s"] + ([f"{ours} {mb}"] if mem else [])
    for p in peers:
        header += [f"{p} s", f"{p} / {ours}", f"{p} error"] + ([f"{p} {mb}"] if mem else [])
    body = []
    for key in order:
        c = cells[key]
        o = c.get(ours, {})
        line = [fmt("metric", key[0]), fmt("n", key[1]), fmt("seconds", o.get("seconds"))]
        if mem:
            line.append(fmt(mem_key, o.get(mem_key)))
        for p in peers:
            r = c.get(p)
            if r is None:
                line += [""] * (4 if mem else 3)
            elif _harness.skip_reason(r):
                line += [f"skipped: {fmt('reason', _harness.skip_reason(r))}"] + [""] * (3 if mem else 2)
            else:
                line += [fmt("seconds", r.get("seconds")), fmt("time_ratio_peer_over_unialign",
                                                                r.get("time_ratio_peer_over_unialign")),
                         fmt("abs_error_vs_unialign", r.get("abs_error_vs_unialign"))]
                if mem:
                    line.append(fmt(mem_key, r.get(mem_key)))
        body.append(line)
    return _table(header, body)


def render_suite(doc: dict, suite: str, source: str) -> str:
    """The markdown block of one suite: caption (source, run command, machine), then one table per section."""
    rows = [r for r in doc["rows"] if r.get("suite") == suite]
    m = doc.get("machine") or {}
    lines = [f"*Generated from `{source}` by `python -m benchmarks tables`; do not edit by hand.*", "",
             f"Run: `{doc.get('command')}` (mode {doc.get('mode')}, {doc.get('started')}).", "",
             f"Machine: {_harness.describe(m)}.", ""]
    groups: dict[str, list[dict]] = {}
    notes, skipped, errors = [], [], []
    for r in rows:
        if r.get("status") == "error":
            errors.append(r)
            continue
        why = _harness.skip_reason(r)
        if why and "impl" not in r:
            skipped.append((r.get("command"), why))
            continue
        if "note" in r and len(set(r) - {"suite", "command", "note", "interval_peak_mb"}) == 0:
            notes.append(r["note"])
            continue
        if _is_meta(r):
            continue
        groups.setdefault(_group(r), []).append(r)
    for name, grows in groups.items():
        commands = list(dict.fromkeys(r.get("command") for r in grows if r.get("command")))
        lines.append(f"**{suite} / {name}**" + (" — " + "; ".join(f"`{c}`" for c in commands) if commands else ""))
        lines.append("")
        lines += _pivot_table(grows) if all("impl" in r for r in grows) else _plain_table(grows)
        lines.append("")
    for title, items in (("Notes", notes), ("Skipped", [f"{why}" + (f" (`{c}`)" if c else "")
                                                         for c, why in skipped]),
                         ("Failed", [f"`{r.get('command')}`: {r.get('reason')}" for r in errors])):
        if items:
            lines.append(f"{title}:")
            lines += [f"- {fmt('note', i)}" for i in items]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _markers(suite: str) -> tuple[str, str]:
    return f"<!-- generated:{suite}:begin -->", f"<!-- generated:{suite}:end -->"


def replace_between_markers(text: str, suite: str, block: str) -> str:
    """``text`` with everything between the suite's begin/end markers replaced by ``block`` (markers kept)."""
    begin, end = _markers(suite)
    pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"the README must contain {begin} ... {end} exactly once (each on its own line); "
                         f"add them where the {suite} tables go")
    return pattern.sub(lambda _: f"{begin}\n{block}{end}", text)


def tables(args) -> int:
    doc = _harness.read_results(args.results)
    suites = list(dict.fromkeys(r.get("suite") for r in doc["rows"] if r.get("suite")))
    if args.suite:
        suites = [s for s in suites if s in args.suite]
    source = args.source or Path(args.results).name
    blocks = {s: render_suite(doc, s, source) for s in suites}
    if not args.readme:
        for s, block in blocks.items():
            print(f"### {s}\n\n{block}")
        return 0
    readme = Path(args.readme)
    if not readme.is_file():
        raise FileNotFoundError(f"README {str(readme)!r} does not exist; pass the README that holds the generated "
                                "blocks (benchmarks/README.md)")
    text = readme.read_text()
    new = text
    for s, block in blocks.items():
        new = replace_between_markers(new, s, block)
    if new != text:
        from align._io import atomic_write

        with atomic_write(readme, "w") as f:
            f.write(new)
    print(f"[benchmarks] {len(blocks)} suite tables ({', '.join(blocks)}) -> {readme}"
          + ("" if new != text else " (unchanged)"), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run suites into one JSON file")
    mode = r.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="every suite's smoke case (CI)")
    mode.add_argument("--full", action="store_true", help="the README tables")
    mode.add_argument("--gpu", action="store_true", help="the CUDA cases; skipped without CUDA")
    r.add_argument("--suite", action="append", choices=list(SUITES), help="run only this suite (repeatable)")
    r.add_argument("--out", default="benchmark-results.json", help="results JSON (default %(default)s)")
    r.add_argument("--threads", type=_threads, default=1, help="OMP/MKL/OpenBLAS/numba/torch threads (default 1)")
    t = sub.add_parser("tables", help="markdown tables from a results JSON")
    t.add_argument("results", help="JSON written by `python -m benchmarks run`")
    t.add_argument("--readme", default=None, help="rewrite this file's generated blocks (default: print)")
    t.add_argument("--suite", action="append", help="only this suite's block (repeatable)")
    t.add_argument("--source", default=None, help="how to name the results file in the captions (default: its name)")
    args = ap.parse_args(argv)
    args.argv = argv
    try:
        return run(args) if args.cmd == "run" else tables(args)
    except (ValueError, FileNotFoundError) as exc:  # bad input: exit status 1 (a bad command line is argparse's 2)
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
