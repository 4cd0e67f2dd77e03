"""The command line a benchmark records next to its results, written relative to the repository root.

Results are committed (``benchmarks/results/*.json``) and read on other machines, so a recorded
command names the interpreter as ``python``, the script by its path in the repository, and every
argument that is an absolute path relative to the repository root (``../x`` when it lies outside):
it never carries the path of the machine the benchmark ran on.

    >>> command_line(ROOT / "benchmarks" / "maxsim.py", ["--pages", "10", "--real-features", str(ROOT / "cache")])
    'python benchmarks/maxsim.py --pages 10 --real-features cache'
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def relative_path(value: str | os.PathLike[str]) -> str:
    """``value`` relative to the repository root when it is absolute; unchanged otherwise."""
    text = os.fspath(value)
    if not os.path.isabs(text):
        return text
    return os.path.relpath(os.path.normpath(text), ROOT)


def relative_arg(arg: str) -> str:
    """One command-line argument with its path (``/x`` or ``--opt=/x``) made relative to the repository root."""
    if arg.startswith("-") and "=" in arg:
        option, _, value = arg.partition("=")
        return f"{option}={relative_path(value)}"
    return relative_path(arg)


def command_line(script: str | os.PathLike[str], argv: Sequence[str], prefix: str = "") -> str:
    """``python <script relative to the repo> <argv with relative paths>``, after ``prefix`` (e.g. ``nice -n 10``)."""
    parts = ["python", relative_path(Path(script).resolve()), *(relative_arg(str(a)) for a in argv)]
    return " ".join([prefix, *parts] if prefix else parts)
