"""Measurement machinery shared by every benchmark suite: timing, peak memory, machine description, result rows.

* :func:`measure` runs a call ``warmup + repeats`` times and returns the median and every time (wall clock and the
  process's CPU time), the peak resident memory the call added, the peak CUDA memory it allocated, and its result.
* :func:`machine` describes where the numbers were taken: CPU, cores and affinity, RAM, load, OS, library versions,
  thread variables, CUDA device and git commit.
* :func:`emit` is the one way a suite reports a measurement: it prints the row as a JSON line (as the scripts always
  did) and, while :func:`collecting` is active, keeps it for the results file.
* :func:`write_results` writes ``{machine, command, mode, started, finished, rows}`` atomically
  (``align._io.atomic_write``).

Memory: a background thread reads the resident set size from ``/proc/self/statm`` about every millisecond while the
call runs. A call that holds the GIL in C code for a long time starves that thread, so where the kernel allows it the
peak is also read from ``VmHWM`` (``/proc/self/status``) after resetting it through ``/proc/self/clear_refs``; the
reported peak is the larger of the two, minus the resident size just before the call. Before the call the C heap's
free memory is returned to the OS (glibc ``malloc_trim``), so memory an earlier call freed and this one reuses still
counts; memory the process still holds (caches, file pages already mapped, e.g. a memory-mapped ``.npy`` read
earlier) does not. Memory freed before the call ends counts at its peak.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MB = 1024 * 1024

__all__ = ["Measurement", "measure", "PeakMemory", "machine", "describe", "emit", "emit_interval", "mark_interval",
           "skip", "skip_reason", "collecting", "rows", "write_results", "read_results", "pin_threads", "THREAD_VARS"]


# ---------------------------------------------------------------- memory -----------------------------------------


def _rss_bytes() -> int | None:
    """Resident set size of this process (``/proc/self/statm``, field 2), or None where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _hwm_bytes() -> int | None:
    """Peak resident set size since the last reset (``VmHWM`` of ``/proc/self/status``), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _reset_hwm() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0: write 5 to ``/proc/self/clear_refs``); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    """Give the C heap's free memory back to the OS (glibc ``malloc_trim(0)``), so the next call's growth shows.

    glibc raises its mmap threshold after large frees, and memory freed later stays in the heap: without a trim, a
    call that reuses what an earlier call freed shows no growth at all. A no-op where there is no glibc.
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


class PeakMemory:
    """Context manager: peak resident memory added while the block runs, in bytes (``.peak_bytes``).

    >>> with PeakMemory() as pm:                     # doctest: +SKIP
    ...     a = np.ones(25_000_000)
    >>> pm.peak_bytes / 2**20                        # doctest: +SKIP
    190.7...
    """

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.before = self.peak = None
        self.hwm_used = False

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            v = _rss_bytes()
            if v is not None and v > self.peak:
                self.peak = v

    def __enter__(self) -> "PeakMemory":
        _malloc_trim()
        self.hwm_used = _reset_hwm()
        self.before = _rss_bytes()
        self.peak = self.before or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="peak-memory", daemon=True)
        if self.before is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        end = _rss_bytes()
        if end is not None:
            self.peak = max(self.peak, end)
        if self.hwm_used:
            hwm = _hwm_bytes()
            if hwm is not None:
                self.peak = max(self.peak, hwm)

    @property
    def peak_bytes(self) -> int | None:
        """Peak RSS during the block minus RSS before it (>= 0), or None without /proc."""
        if self.before is None:
            return None
        return max(0, self.peak - self.before)


# ---------------------------------------------------------------- timing -----------------------------------------


@dataclasses.dataclass(frozen=True)
class Measurement:
    """What :func:`measure` saw. Times in seconds; memory in MiB (2**20 bytes).

    ``wall_s`` / ``cpu_s`` are medians over the timed repeats (warm-up calls excluded); ``wall_times`` /
    ``cpu_times`` every timed repeat. ``cpu_s`` is ``time.process_time`` of this process (all its threads), which
    other jobs on a shared machine disturb far less than wall time; ``children_cpu_s`` (median) the CPU time of
    child processes that ended and were waited for during the call (DataLoader workers, subprocess peers).
    ``peak_mb`` is the largest peak over the timed repeats of the resident memory the call added; ``cuda_peak_mb``
    the largest ``torch.cuda.max_memory_allocated`` above what was allocated before the call (None off CUDA).
    ``result`` is the last call's return value (not in :meth:`to_dict`).
    """

    wall_s: float
    cpu_s: float
    wall_times: tuple[float, ...]
    cpu_times: tuple[float, ...]
    children_cpu_s: float
    peak_mb: float | None
    cuda_peak_mb: float | None
    repeats: int
    warmup: int
    result: Any = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self, prefix: str = "") -> dict:
        """The numbers (not the result) as a flat dict; ``prefix`` names the measured thing (``"ours_"``)."""
        d = {"wall_s": round(self.wall_s, 6), "cpu_s": round(self.cpu_s, 6),
             "children_cpu_s": round(self.children_cpu_s, 6),
             "wall_times": [round(t, 6) for t in self.wall_times], "cpu_times": [round(t, 6) for t in self.cpu_times],
             "peak_mb": None if self.peak_mb is None else round(self.peak_mb, 2),
             "cuda_peak_mb": None if self.cuda_peak_mb is None else round(self.cuda_peak_mb, 2),
             "repeats": self.repeats, "warmup": self.warmup}
        return {f"{prefix}{k}": v for k, v in d.items()}


def _cuda_sync(device) -> bool:
    """Synchronise ``device`` if it is a CUDA device (so a timing includes its queued kernels); True if CUDA."""
    if device is None or "cuda" not in str(device):
        return False
    import torch

    torch.cuda.synchronize(device)
    return True


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def measure(fn: Callable[..., Any], *args: Any, repeats: int = 3, warmup: int = 1, device: Any = None,
            **kwargs: Any) -> Measurement:
    """Call ``fn(*args, **kwargs)`` ``warmup`` times untimed, then ``repeats`` times timed.

    Parameters
    ----------
    fn : callable
        The measured call. Its result is kept from the last timed call.
    repeats : int
        Timed calls (>= 1); the median is reported, every time is kept.
    warmup : int
        Untimed calls first (>= 0): first-call costs (imports, allocator growth, kernel selection) stay out.
    device : str or torch.device, optional
        A CUDA device: synchronised around each call, and its peak allocation measured.

    Returns
    -------
    Measurement
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"`repeats` must be an int >= 1, got {repeats!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"`warmup` must be an int >= 0, got {warmup!r}")
    for _ in range(warmup):
        fn(*args, **kwargs)
    cuda = _cuda_sync(device)
    walls, cpus, kids, peaks, cuda_peaks = [], [], [], [], []
    result = None
    for _ in range(repeats):
        if cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(device)
            alloc0 = torch.cuda.memory_allocated(device)
        result = None  # let the previous result go before measuring memory again
        with PeakMemory() as pm:
            k0 = _children_cpu()
            w0, c0 = time.perf_counter(), time.process_time()
            result = fn(*args, **kwargs)
            _cuda_sync(device)
            w1, c1 = time.perf_counter(), time.process_time()
            k1 = _children_cpu()
        walls.append(w1 - w0)
        cpus.append(c1 - c0)
        kids.append(k1 - k0)
        if pm.peak_bytes is not None:
            peaks.append(pm.peak_bytes / _MB)
        if cuda:
            cuda_peaks.append((torch.cuda.max_memory_allocated(device) - alloc0) / _MB)
    return Measurement(wall_s=statistics.median(walls), cpu_s=statistics.median(cpus), wall_times=tuple(walls),
                       cpu_times=tuple(cpus), children_cpu_s=statistics.median(kids),
                       peak_mb=max(peaks) if peaks else None,
                       cuda_peak_mb=max(cuda_peaks) if cuda_peaks else None, repeats=repeats, warmup=warmup,
                       result=result)


# ---------------------------------------------------------------- machine ----------------------------------------


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        return None
    return None


def _git_commit() -> dict:
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def _cuda() -> dict | None:
    """The CUDA device torch sees, or None (no torch, or no CUDA device)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    i = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(i)
    return {"name": props.name, "count": torch.cuda.device_count(), "memory_gb": round(props.total_memory / 1024**3, 1),
            "cuda": torch.version.cuda}


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict:
    """Where the numbers come from: hardware, load (before; the runner adds ``load_after``), software, git."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    import torch

    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "affinity_cores": affinity,
        "ram_gb": _ram_gb(),
        "load_before": load_average(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(dist) for name, dist in
                     (("numpy", "numpy"), ("scipy", "scipy"), ("torch", "torch"), ("POT", "POT"),
                      ("scikit-learn", "scikit-learn"), ("repsim", "repsim"), ("unialign", "unialign"))},
        "threads": {**{v: os.environ.get(v) for v in THREAD_VARS}, "torch": torch.get_num_threads()},
        "cuda": _cuda(),
        "git": _git_commit(),
    }


def describe(m: dict) -> str:
    """One line for a table's caption: CPU, cores, RAM, load, threads, GPU, commit."""
    threads = m.get("threads") or {}
    omp = threads.get("OMP_NUM_THREADS")
    load = m.get("load_before")
    load_after = m.get("load_after")
    parts = [f"{m.get('cpu')}", f"{m.get('affinity_cores')} of {m.get('logical_cores')} cores",
             f"{m.get('ram_gb')} GB RAM"]
    if load:
        parts.append(f"load {load[0]:.1f}" + (f" → {load_after[0]:.1f}" if load_after else ""))
    parts.append(f"OMP_NUM_THREADS={omp}")
    cuda = m.get("cuda")
    parts.append(f"GPU {cuda['name']}" if cuda else "no GPU")
    v = m.get("versions") or {}
    parts.append(f"python {m.get('python')}, numpy {v.get('numpy')}, torch {v.get('torch')}")
    git = m.get("git") or {}
    if git.get("commit"):
        parts.append(f"commit {git['commit'][:10]}" + (" (dirty)" if git.get("dirty") else ""))
    return "; ".join(parts)


def pin_threads(n: int) -> None:
    """Set every thread variable to ``n`` (before numpy / torch start their pools) and torch's threads if loaded."""
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


# ---------------------------------------------------------------- rows -------------------------------------------

_ROWS: list[dict] | None = None


@contextmanager
def collecting() -> Iterator[list[dict]]:
    """Keep every :func:`emit`-ted row of the block in the yielded list (nested blocks share the outer list)."""
    global _ROWS
    outer = _ROWS
    if outer is None:
        _ROWS = []
    try:
        yield _ROWS
    finally:
        if outer is None:
            _ROWS = None


def rows() -> list[dict] | None:
    """The rows collected so far, or None outside :func:`collecting`."""
    return _ROWS


def _json_safe(row: dict) -> dict:
    from align._io import json_default

    return json.loads(json.dumps(row, default=json_default))


def emit(suite: str, /, **row: Any) -> dict:
    """Report one measurement of ``suite``: print it as a JSON line and keep it while collecting.

    The printed line (and the returned dict) is the row as the suite gave it, the scripts' historical output; the
    kept row also carries ``suite``. numpy scalars and arrays become plain JSON values.
    """
    row = _json_safe(row)
    print(json.dumps(row), flush=True)
    if _ROWS is not None:
        _ROWS.append({"suite": suite, **row})
    return row


_MARK: dict = {}


def mark_interval() -> None:
    """Start a memory interval for :func:`emit_interval`: reset the peak (``VmHWM``) and note the RSS now."""
    _MARK.clear()
    _malloc_trim()
    if _reset_hwm():
        _MARK["rss"] = _rss_bytes()


def emit_interval(suite: str, /, **row: Any) -> dict:
    """:func:`emit` plus ``interval_peak_mb``: the peak RSS growth since the previous row (or :func:`mark_interval`).

    For scripts that time several implementations by hand: it needs no change to how they measure, but it covers
    everything the process did between two rows (data generation, ours and every peer of that row), so it is an
    upper bound on any one call's peak. None on the first row of a process that never marked, and where the kernel
    refuses to reset the peak (``/proc/self/clear_refs``).
    """
    hwm = _hwm_bytes()
    base = _MARK.get("rss")
    peak = None if hwm is None or base is None else round(max(0, hwm - base) / _MB, 1)
    out = emit(suite, **row, interval_peak_mb=peak)
    mark_interval()
    return out


def skip(suite: str, reason: str, **row: Any) -> dict:
    """Report that a case of ``suite`` did not run, and why (a missing peer, no GPU, no data)."""
    return emit(suite, status="skipped", reason=reason, **row)


def skip_reason(row: dict) -> str | None:
    """Why a row says its case did not run, in any of the suites' spellings; None for a measured row.

    ``status="skipped"`` + ``reason`` (the harness, real_data.py), ``skipped=REASON`` (bench_similarity.py) and a
    ``note`` that says a peer was skipped or is not installed (bench_matching.py, bench_similarity.py).
    """
    if row.get("status") == "skipped":
        return str(row.get("reason") or "skipped (no reason given)")
    if isinstance(row.get("skipped"), str):
        return row["skipped"]
    note = row.get("note")
    if isinstance(note, str) and ("skipped" in note or "not installed" in note):
        return note
    return None


def write_results(path: str | os.PathLike, *, machine: dict, command: str, mode: str, started: str,
                  rows: list[dict], finished: str | None = None, **extra: Any) -> Path:
    """Write the results file atomically: ``{machine, command, mode, started, finished, rows, ...}``."""
    from align._io import atomic_write, json_default

    doc = {"machine": machine, "command": command, "mode": mode, "started": started, "finished": finished,
           **extra, "rows": rows}
    path = Path(path)
    with atomic_write(path, "w") as f:
        json.dump(doc, f, indent=1, default=json_default)
        f.write("\n")
    return path


def read_results(path: str | os.PathLike) -> dict:
    """Read a results file written by :func:`write_results`; a file that is not one raises ``ValueError``."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"results file {str(path)!r} does not exist; make it with "
                                f"`python -m benchmarks run --out {path}`") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"results file {str(path)!r} is not JSON ({exc}); rerun `python -m benchmarks run`") from None
    if not isinstance(doc, dict) or not {"machine", "command", "rows"} <= doc.keys():
        raise ValueError(f"results file {str(path)!r} lacks machine/command/rows; was it written by "
                         f"`python -m benchmarks run`?")
    return doc
