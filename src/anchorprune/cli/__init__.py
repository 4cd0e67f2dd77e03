"""The ``anchorprune`` command line."""

from anchorprune.cli.app import app

__all__ = ["app"]
