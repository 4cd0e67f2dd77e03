"""The ``anchorprune`` command line (``anchorprune.cli:app``, the console entry point)."""

from anchorprune.cli.main import app

__all__ = ["app"]
