"""One way a command fails: the project's known errors become one line on stderr and an exit code.

    with exit_on(CONFIG, DATA):
        ...

Each family maps exception types to an exit code (2: the command line or the config is wrong;
1: the command ran and failed). The families import their exception types when a command fails,
so ``anchorprune --help`` imports none of the heavy libraries. Anything else is a bug and keeps
its traceback.

Errors from below the project (:data:`SYSTEM`: an ``OSError`` with an errno, a tracking database that
cannot be read, a server that cannot be reached) are described by :func:`describe`: what failed, the
file or server it names (servers only through the ``str()`` of the error, which redacts credentials
where the project builds it), and the fix.
"""

from __future__ import annotations

import errno as errnos
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


#: the fix for an OSError, by errno
OS_FIXES = {
    errnos.ENOSPC: "free space on that filesystem (or point the setting at another one) and run the command again",
    errnos.EDQUOT: "free space within the quota (or point the setting elsewhere) and run the command again",
    errnos.EROFS: "that filesystem is read-only: remount it writable, or point the setting at a writable folder",
    errnos.EACCES: "this user may not write there: fix its permissions, or point the setting at a writable folder",
    errnos.EPERM: "this user may not write there: fix its permissions, or point the setting at a writable folder",
    errnos.ENOTDIR: "a part of that path is a file, not a folder: move the file away or fix the setting",
    errnos.EISDIR: "that path is a folder where a file is expected: fix the setting",
    errnos.ENOENT: "it does not exist: create it, or fix the setting that names it",
}


def describe(exc: BaseException, where: str | None = None) -> str:
    """One line for ``exc``: the project's own errors as they are; an ``OSError`` with its file and fix; a tracking
    database that cannot be read; a server that cannot be reached (``where``: what the command was working on,
    for errors that name no file).

    >>> describe(OSError(28, "No space left on device"), where="index folder /srv/idx")
    'index folder /srv/idx: No space left on device (ENOSPC); free space on that filesystem (or point the setting at another one) and run the command again'
    >>> describe(OSError(30, "Read-only file system", "/srv/idx/.lock"))
    '/srv/idx/.lock: Read-only file system (EROFS); that filesystem is read-only: remount it writable, or point the setting at a writable folder'
    """
    if isinstance(exc, OSError) and exc.errno is not None and not _is_connection_error(exc):
        files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        name = errnos.errorcode.get(exc.errno, str(exc.errno))
        fix = OS_FIXES.get(exc.errno)
        return one_line(f"{files or where or 'a file'}: {exc.strerror or exc} ({name})" + (f"; {fix}" if fix else ""))
    if _is_database_error(exc):
        orig = getattr(exc, "orig", None) or exc
        first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        uri = getattr(exc, "tracking_uri", None)
        from anchorprune.redact import redact_url

        where_db = redact_url(uri) if uri else _tracking_uri()
        return one_line(f"the MLflow tracking database {where_db} cannot be read ({first}): restore it from a "
                        "backup, or move it away and set the tracking URI (tracking.uri or MLFLOW_TRACKING_URI) to a "
                        "new one; the runs and the registry it held are then gone")
    from anchorprune.servers import ServerUnreachableError

    if isinstance(exc, ServerUnreachableError):        # names the server (redacted) and what to check already
        return one_line(exc)
    if _is_connection_error(exc):
        from anchorprune.redact import redact_text

        text = one_line(redact_text(exc))
        if len(text) > 400:
            text = text[:400] + "..."
        return one_line(f"{where + ': ' if where else ''}cannot reach the server ({type(exc).__name__}: {text}); "
                        "check that it is running and that its URL (e.g. ELASTICSEARCH_URL) is right")
    return one_line(exc)


def _tracking_uri() -> str:
    """The tracking URI, redacted."""
    from anchorprune.redact import redact_url

    try:
        import mlflow

        uri = str(mlflow.get_tracking_uri())
    except Exception:                   # noqa: BLE001 - the message must not fail
        return "(its URI is unknown)"
    return redact_url(uri)


def _is_database_error(exc: BaseException) -> bool:
    return any(t.__module__.startswith("sqlalchemy") and t.__name__ == "DatabaseError" for t in type(exc).__mro__)


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError) or any(
        t.__name__ in ("ConnectionError", "ConnectionTimeout") and t.__module__.startswith("elastic")
        for t in type(exc).__mro__)


@contextmanager
def exit_on(*families: Family, where: str | None = None) -> Iterator[None]:
    """Turn the errors of ``families`` raised in the block into ``error: <message>`` and their exit code.

    An exception of several families' types gets the code of its most specific type. ``where`` names
    what the block works on, for errors that name no file (:func:`describe`). An ``OSError`` without an
    errno is not a system error: it keeps its traceback unless a family names its exact type.
    """
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:
        codes: dict[type[BaseException], int] = {}
        for family in families:
            codes.update(family())
        hit = next((t for t in type(exc).__mro__ if t in codes), None)
        if hit is None or (hit is OSError and getattr(exc, "errno", None) is None):
            raise
        raise fail(describe(exc, where), codes[hit]) from None


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


def SYSTEM() -> dict[type[BaseException], int]:  # noqa: N802
    """Below the project: a file system error with an errno (disk full, read-only, a file where a folder
    should be), a tracking database that cannot be read, a server that cannot be reached: exit 1."""
    out: dict[type[BaseException], int] = {OSError: 1, ConnectionError: 1}
    try:
        import elastic_transport

        out.update(dict.fromkeys((elastic_transport.ConnectionError, elastic_transport.ConnectionTimeout), 1))
    except ImportError:
        pass
    try:
        import sqlalchemy.exc

        out[sqlalchemy.exc.DatabaseError] = 1
    except ImportError:
        pass
    return out
