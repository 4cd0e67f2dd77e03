"""Dask worker preload for the local encode cluster: a worker never outlives the process that started it.

``distributed`` loads this module in every worker of a local cluster (``preload=[...]`` in
``flows.common.local_cluster_kwargs``) and calls :func:`dask_setup`. A daemon thread then checks,
once a second, that the worker's parent (the client process that holds the nannies) is still its
parent; when the client dies, even by SIGKILL or the OOM killer, the worker exits at once instead
of lingering with its model in memory. It also quietens the worker's logging to the client's level.
"""

from __future__ import annotations

import logging
import os
import threading

#: the environment variable that carries the client's log level to the workers (``-v``: INFO)
LOG_LEVEL_ENV = "ANCHORPRUNE_DASK_LOG_LEVEL"


def _watch(parent: int, period_s: float) -> None:
    stop = threading.Event()
    while not stop.wait(period_s):
        if os.getppid() != parent:
            os._exit(0)     # the parent is gone: nothing will collect this worker's results


def dask_setup(worker=None, period_s: float = 1.0) -> None:  # noqa: ARG001 - the signature distributed calls
    level = os.environ.get(LOG_LEVEL_ENV)
    if level:
        for name in ("distributed", "distributed.worker", "distributed.nanny", "distributed.core"):
            logging.getLogger(name).setLevel(level)
    import multiprocessing

    if multiprocessing.parent_process() is None:     # an in-process (thread) worker: nothing to guard
        return
    parent = os.getppid()
    if parent <= 1:
        return
    threading.Thread(target=_watch, args=(parent, period_s), name="anchorprune-parent-guard", daemon=True).start()
