"""Prefect's temporary server stops with the process that started it, however that process ends.

Without ``PREFECT_API_URL`` a flow run starts Prefect's temporary API server
(``prefect.server.api.server.SubprocessASGIServer``: ``python -m uvicorn ...`` in a child
process) and stops it from an ``atexit`` hook. That hook runs after Ctrl-C, but not after
SIGTERM (Python's default action ends the process without ``atexit``) nor after ``kill -9``: the
server stayed up, found minutes later.

:func:`watch_temporary_server` makes Prefect start the same command under this module instead
(``python -m anchorprune.orchestration.tempserver <parent pid> <uvicorn args>``): a daemon
thread in the server process polls its parent every :data:`POLL_S` seconds and, once the parent
is gone (the process was re-parented), sends itself SIGTERM (uvicorn shuts down) and exits for
good after :data:`GRACE_S` seconds. A poll instead of Linux ``PR_SET_PDEATHSIG``: that signal
follows the *thread* that forked the child, and Prefect may start the server from a worker
thread that ends before the run does. Prefect's own start-up, health check and ``stop()`` are
unchanged.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

#: how often the server checks that its parent is alive, and how long it gets to shut down after
POLL_S = 0.5
GRACE_S = 5.0

_lock = threading.Lock()


def watch_temporary_server() -> None:
    """Make the temporary server Prefect starts from this process exit when this process dies (idempotent)."""
    from prefect.server.api import server as server_mod

    cls = server_mod.SubprocessASGIServer
    if getattr(cls._run_uvicorn_command, "_anchorprune_watched", False):
        return
    original = cls._run_uvicorn_command

    def run_uvicorn_command(self: Any) -> Any:
        real = server_mod.subprocess
        with _lock:
            server_mod.subprocess = _WatchedSubprocess(real)
            try:
                return original(self)
            finally:
                server_mod.subprocess = real

    run_uvicorn_command._anchorprune_watched = True  # type: ignore[attr-defined]
    cls._run_uvicorn_command = run_uvicorn_command


def watched_args(args: list[str], parent: int) -> list[str]:
    """``[python, -m, uvicorn, ...]`` as ``[python, -m, <this module>, <parent>, ...]``; anything else unchanged.

    >>> watched_args(["py", "-m", "uvicorn", "--port", "1"], 7)
    ['py', '-m', 'anchorprune.orchestration.tempserver', '7', '--port', '1']
    """
    if len(args) >= 3 and args[1:3] == ["-m", "uvicorn"]:
        return [args[0], "-m", __name__, str(parent), *args[3:]]
    return list(args)


class _WatchedSubprocess:
    """The ``subprocess`` module as Prefect's server module sees it while it starts the server."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def Popen(self, args: Any = None, *a: Any, **kw: Any) -> Any:  # noqa: N802 - the name Prefect calls
        if "args" in kw:
            kw["args"] = watched_args(list(kw["args"]), os.getpid())
        else:
            args = watched_args(list(args), os.getpid())
            a = (args, *a)
        return self._real.Popen(*a, **kw)


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)      # uvicorn's graceful shutdown
    time.sleep(GRACE_S)
    os._exit(1)


def main(argv: list[str]) -> None:
    """``<parent pid> <uvicorn args>``: run uvicorn here while a thread watches the parent."""
    parent = int(argv[0])
    if os.getppid() != parent:            # the parent died before we got here
        sys.exit(1)
    threading.Thread(target=_watch, args=(parent,), name="parent-watch", daemon=True).start()
    import runpy

    sys.argv = ["uvicorn", *argv[1:]]
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
