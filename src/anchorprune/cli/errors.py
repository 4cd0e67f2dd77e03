"""One way a command fails: the project's known errors become one line on stderr and an exit code.

    with exit_on(CONFIG, DATA):
        ...

Each family maps exception types to an exit code (2: the command line or the config is wrong;
1: the command ran and failed). The families import their exception types when a command fails,
so ``anchorprune --help`` imports none of the heavy libraries. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer

#: a family of known errors: called when a command fails, it maps exception types to exit codes
Family = Callable[[], dict[type[BaseException], int]]


def one_line(exc: BaseException | str) -> str:
    """The message on one line (whitespace runs, newlines included, as one space).

    >>> one_line(ValueError("bad\\n  value"))
    'bad value'
    """
    return " ".join(str(exc).split())


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: <message>`` on stderr and return the exit to raise: ``raise fail(...)``."""
    typer.echo(f"error: {one_line(message)}", err=True)
    return typer.Exit(code)


@contextmanager
def exit_on(*families: Family) -> Iterator[None]:
    """Turn the errors of ``families`` raised in the block into ``error: <message>`` and their exit code.

    An exception of several families' types gets the code of its most specific type.
    """
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        codes: dict[type[BaseException], int] = {}
        for family in families:
            codes.update(family())
        code = next((codes[t] for t in type(exc).__mro__ if t in codes), None)
        if code is None:
            raise
        raise fail(str(exc), code) from None


def CONFIG() -> dict[type[BaseException], int]:  # noqa: N802 - a family reads like a constant
    """A missing or invalid params file, an unknown backbone name: exit 2."""
    from anchorprune.config import ConfigError

    return {ConfigError: 2}


def DATA() -> dict[type[BaseException], int]:  # noqa: N802
    """The data layer's named errors (a bad or missing dataset, PDFs, DVC): exit 1."""
    from anchorprune.data.demo import DemoAssetsError
    from anchorprune.data.pdfs import PdfError
    from anchorprune.data.schema import DatasetError
    from anchorprune.data.validation import DataValidationError
    from anchorprune.data.versioning import DataVersionError
    from anchorprune.data.vidore_ids import DatasetUnavailableError

    return dict.fromkeys((DemoAssetsError, PdfError, DatasetError, DataValidationError, DataVersionError,
                          DatasetUnavailableError, FileNotFoundError, ValueError), 1)


def INDEX() -> dict[type[BaseException], int]:  # noqa: N802
    """The index store, scoring and the index stage: exit 1."""
    from anchorprune.evaluation.scoring import ScoringError
    from anchorprune.index import IndexStoreError
    from anchorprune.stages.index import IndexStageError

    return dict.fromkeys((IndexStoreError, ScoringError, IndexStageError), 1)


def INDEX_OPEN() -> dict[type[BaseException], int]:  # noqa: N802
    """An index that cannot be opened at all (unusable backend config, unreachable store): exit 2."""
    return dict.fromkeys(INDEX(), 2)


def FLOWS() -> dict[type[BaseException], int]:  # noqa: N802
    """The project root has no flows/ to load (not a checkout): exit 1."""
    from anchorprune.orchestration.entrypoints import FlowsNotFoundError

    return {FlowsNotFoundError: 1}


def DEPLOY() -> dict[type[BaseException], int]:  # noqa: N802
    """No reachable Prefect server, an unusable work pool, deployments held elsewhere: exit 1."""
    from anchorprune.orchestration.deployments import DeployError

    return {DeployError: 1}


def PLOTS() -> dict[type[BaseException], int]:  # noqa: N802
    """DVC could not render the plots: exit 1."""
    from anchorprune.tracking.dvc_plots import PlotsError

    return {PlotsError: 1}
