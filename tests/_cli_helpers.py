"""Helpers shared by the command-line tests."""
from __future__ import annotations


def one_error_line(result) -> str:
    """The single ``error: …`` line a CLI run wrote to stderr; fails the test on a traceback or on several lines."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]
