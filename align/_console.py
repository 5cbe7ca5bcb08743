"""What the command line writes to stderr: one-line warnings, and no third-party progress bars unless ``-v``.

The library warns through :mod:`warnings` and logs through :mod:`logging`; a terminal user should read neither a
source path nor a stack of ``UserWarning`` boilerplate, nor a bar such as transformers' ``Loading weights
103/103`` that says nothing about their command. :func:`install` (called by ``unialign``'s group callback) turns
every Python warning into the single line ``warning: <message>``, logs WARNING and above as ``warning: <message>``
too (INFO and DEBUG with ``-v`` / ``-vv``, and ERROR, keep the level and logger name), and switches off the Hugging Face progress bars
(transformers, huggingface_hub) unless ``verbose >= 1``. unialign's own progress bars (``--progress``) are not
affected. The returned callable undoes all of it, so an in-process runner (click's ``CliRunner``) leaves the
interpreter as it found it.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable

__all__ = ["format_warning", "install"]

#: Environment variable huggingface_hub (and through it transformers) reads at import to disable its progress bars.
_HF_BARS_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"


def format_warning(message: Warning | str) -> str:
    """``"warning: <message>"`` on one line: inner newlines and runs of spaces collapse to single spaces."""
    text = " ".join(str(message).split())
    return f"warning: {text}"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    stream = file if file is not None else sys.stderr
    try:
        stream.write(format_warning(message) + "\n")
    except (OSError, ValueError):  # a closed or broken stderr: a warning is not worth a crash
        pass


class _Formatter(logging.Formatter):
    """WARNING records as ``warning: <message>`` on one line; the others as ``LEVEL logger: message``.

    ERROR keeps its level name: the one ``error: …`` line of a failed command is the command line's own."""

    def __init__(self):
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.WARNING and not record.exc_info:
            return format_warning(record.getMessage())
        return super().format(record)


class _EpochFormatter(logging.Formatter):
    """The trainer's per-epoch record (``"epoch %d: %s"`` with a dict) as one short progress line on stderr."""

    def format(self, record: logging.LogRecord) -> str:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg == "epoch %d: %s" and len(args) == 2 and isinstance(args[1], dict):
            r = args[1]
            parts = [f"epoch {args[0]}"]
            if isinstance(r.get("loss"), float):
                parts.append(f"loss {r['loss']:.4f}")
            if isinstance(r.get("val_R@1"), float):
                parts.append(f"val R@1 {r['val_R@1']:.3f}")
            if isinstance(r.get("epoch_time_s"), float):
                parts.append(f"{r['epoch_time_s']:.1f} s")
            return "fit: " + ", ".join(parts)
        return "fit: " + record.getMessage()


def _hf_state() -> tuple[bool | None, bool | None]:
    """(huggingface_hub bars on, transformers bars on); None for a package not imported yet."""
    hub = sys.modules.get("huggingface_hub.utils")
    tf = sys.modules.get("transformers.utils.logging")
    return (None if hub is None else not hub.are_progress_bars_disabled(),
            None if tf is None else bool(tf.is_progress_bar_enabled()))


def _set_hf_bars(hub_on: bool | None, tf_on: bool | None) -> None:
    """Switch the bars of the Hugging Face packages already imported (None: leave that one alone)."""
    # huggingface_hub reads the variable once, at import: one imported while it was set warns that it "has priority"
    # when asked to enable its bars again (transformers asks it too) and keeps them off; nothing else can be done
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hub = sys.modules.get("huggingface_hub.utils")
        if hub is not None and hub_on is not None:
            (hub.enable_progress_bars if hub_on else hub.disable_progress_bars)()
        tf = sys.modules.get("transformers.utils.logging")
        if tf is not None and tf_on is not None:
            (tf.enable_progress_bar if tf_on else tf.disable_progress_bar)()


#: Loggers whose INFO records are a command's progress, shown on stderr without ``-v`` (``{command: loggers}``).
PROGRESS_LOGGERS = {"fit": ("projectors.trainer",)}


def install(verbose: int = 0, command: str | None = None) -> Callable[[], None]:
    """Route warnings and logs to stderr as the command line shows them; return the function that undoes it.

    Parameters
    ----------
    verbose : int
        0: warnings and errors only, no third-party progress bars; 1 (``-v``): also INFO, and third-party bars;
        2 (``-vv``): DEBUG.
    command : str, optional
        The subcommand about to run; for those in :data:`PROGRESS_LOGGERS` (``fit``: one line per training epoch,
        ``fit: epoch 3, loss 1.2345, val R@1 0.512, 2.1 s``) progress shows on stderr at ``verbose=0`` too.

    Returns
    -------
    callable
        Restores ``warnings.showwarning``, the root logger (the handler added, its level), and the progress-bar
        settings.
    """
    root = logging.getLogger()
    saved_show, saved_level = warnings.showwarning, root.level
    warnings.showwarning = _show_warning

    handler = None
    if not root.handlers:  # as logging.basicConfig: a host that configured logging (pytest, an app) keeps its own
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter())
        root.addHandler(handler)
        root.setLevel(logging.WARNING - 10 * min(max(verbose, 0), 2))

    progress: list[tuple[logging.Logger, logging.Handler, int, bool]] = []
    if verbose < 1:
        for name in PROGRESS_LOGGERS.get(command or "", ()):
            lg = logging.getLogger(name)
            h = logging.StreamHandler(sys.stderr)
            h.setFormatter(_EpochFormatter())
            progress.append((lg, h, lg.level, lg.propagate))
            lg.addHandler(h)
            lg.setLevel(logging.INFO)
            lg.propagate = False  # its warnings still show: this handler prints every level, as one line

    # HF_HUB_DISABLE_PROGRESS_BARS=0 set by the user asks for the bars: keep them
    silenced = verbose < 1 and os.environ.get(_HF_BARS_ENV) != "0"
    set_env = silenced and _HF_BARS_ENV not in os.environ
    hub_before, tf_before = _hf_state()
    if set_env:
        os.environ[_HF_BARS_ENV] = "1"
    if silenced:
        _set_hf_bars(False, False)

    def restore() -> None:
        warnings.showwarning = saved_show
        if handler is not None:
            root.removeHandler(handler)
            root.setLevel(saved_level)
        for lg, h, level, propagate in progress:
            lg.removeHandler(h)
            lg.setLevel(level)
            lg.propagate = propagate
        if set_env:
            os.environ.pop(_HF_BARS_ENV, None)
        if silenced:  # back to what they were; a package imported meanwhile gets its default (on, unless env says)
            default = os.environ.get(_HF_BARS_ENV) is None
            _set_hf_bars(default if hub_before is None else hub_before,
                         (default and hub_before is not False) if tf_before is None else tf_before)

    return restore
