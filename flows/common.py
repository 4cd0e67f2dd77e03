"""Shared task wiring: retries for I/O, provenance-keyed caching for the expensive stages."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from datetime import timedelta

from prefect.cache_policies import INPUTS, TASK_SOURCE, CacheKeyFnPolicy

from anchorprune.config import EncodeConfig
from anchorprune.orchestration.environment import prefect_api_url
from anchorprune.orchestration.provenance import stage_key
from anchorprune.servers import probe


def provenance_key(task_ctx, inputs: dict) -> str | None:
    """Config, dataset content, library code, package version and git commit (anchorprune.orchestration.provenance)."""
    if "params" not in inputs or "root" not in inputs:
        return None
    return stage_key(inputs["params"], inputs["root"])


#: the cache policy of the stages: a rerun is answered from cache only if its inputs, the task's source AND the
#: config, data content, library code, version and commit are all unchanged (what `dvc repro` would also rerun on)
STAGE_POLICY = INPUTS + TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=provenance_key)
STAGE_CACHE = dict(cache_policy=STAGE_POLICY, persist_result=True, cache_expiration=timedelta(days=7))
TRANSIENT = (OSError, TimeoutError, ConnectionError)  # network, disk, locks (DVC, sqlite)


def retry_on_io(task, task_run, state) -> bool:
    """Retry only what a retry can fix (I/O against the hub, MLflow, Elasticsearch, DVC), not bugs or bad input."""
    try:
        state.result()
    except TRANSIENT:
        return True
    except Exception as exc:  # noqa: BLE001 - classify by name for optional libraries
        names = {c.__name__ for c in type(exc).__mro__}
        return bool(names & {"MlflowException", "ConnectionError", "TransportError", "DataVersionError"})
    return False


# I/O against the hub, MLflow or Elasticsearch: retry with backoff
IO_RETRIES = dict(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_on_io)


# ---------------------------------------------------------------- Dask (encode shards, the evaluation grid)
#: the address of an existing Dask scheduler; overrides ``encode.address``
ADDRESS_ENV = "ANCHORPRUNE_DASK_ADDRESS"


def dask_address(cfg: EncodeConfig) -> str | None:
    return os.environ.get(ADDRESS_ENV) or cfg.address


def local_cluster_kwargs(cfg: EncodeConfig, jobs: int | None = None) -> dict:
    """A local cluster: ``encode.workers`` processes (default: the cores, at most ``jobs``), one thread each.

    The worker processes get this process's Prefect API: without it each would start an ephemeral
    server of its own on the same database (``database is locked``).
    """
    from anchorprune.features.encoding import WORKER_THREADS_ENV
    from anchorprune.features.worker_guard import LOG_LEVEL_ENV

    workers = cfg.workers or os.cpu_count() or 1
    threads = str(cfg.torch_threads)
    env = {WORKER_THREADS_ENV: threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           LOG_LEVEL_ENV: dask_log_level(), "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "once")}
    if api := prefect_api_url():
        env["PREFECT_API_URL"] = api
    # the preload exits a worker whose parent (this process) is gone: no orphan keeps a model in memory
    return {"n_workers": max(1, min(workers, jobs or workers)), "threads_per_worker": 1, "processes": True,
            "dashboard_address": ":0", "env": env, "preload": ["anchorprune.features.worker_guard"],
            "silence_logs": logging.getLevelName(dask_log_level())}


#: set to 1 (``anchorprune -v``) to see distributed's INFO lines (scheduler, workers, shutdown)
VERBOSE_ENV = "ANCHORPRUNE_VERBOSE"


def dask_log_level() -> str:
    return "INFO" if os.environ.get(VERBOSE_ENV) == "1" else "WARNING"


class _ShutdownNoise(logging.Filter):
    """Drops what a local cluster logs while it closes (the comms it is closing report ``CommClosedError``)."""

    NOISE = ("CommClosedError", "StreamClosedError", "Stream is closed", "connection closed")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            text += record.exc_info[0].__name__
        return not any(n in text for n in self.NOISE)


def quiet_dask() -> None:
    """distributed's loggers at WARNING (INFO with ``ANCHORPRUNE_VERBOSE=1``), shutdown noise dropped,
    each warning printed once. Idempotent; called before a local cluster starts."""
    import warnings

    level = dask_log_level()
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.worker",
                 "distributed.core", "distributed.comm", "distributed.batched", "distributed.client",
                 "distributed.http", "distributed.http.proxy", "distributed.deploy", "prefect.task_runner.dask"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(f, _ShutdownNoise) for f in logger.filters):
            logger.addFilter(_ShutdownNoise())
    warnings.simplefilter("once")


#: seconds an interrupted run gets to close its cluster before its workers are terminated and it exits
INTERRUPT_GRACE_S = 20.0


def _hard_stop(grace_s: float, code: int) -> None:
    """After ``grace_s``: terminate this process's worker processes and exit (an interrupt must not hang)."""
    import multiprocessing
    import time

    time.sleep(grace_s)
    for child in multiprocessing.active_children():
        child.terminate()
    os._exit(code)


@contextlib.contextmanager
def closing_on_signals(grace_s: float = INTERRUPT_GRACE_S) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP stop the block (KeyboardInterrupt / SystemExit in the main thread), so the
    ``finally`` clauses that close a local cluster run; if closing takes longer than ``grace_s`` (a shard
    still running on a worker), the workers are terminated and the process exits: an interrupted encode
    never hangs, and no worker outlives it (features.worker_guard covers SIGKILL)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        threading.Thread(target=_hard_stop, args=(grace_s, 128 + signum), daemon=True).start()
        for s in handled:                      # a second Ctrl-C does not interrupt the cleanup
            signal.signal(s, signal.SIG_IGN)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, stop) for s in handled}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def dask_map(cfg: EncodeConfig, jobs: int | None = None,
             cluster_kwargs: dict | None = None) -> Iterator[Callable[[Callable, list], list]]:
    """``map(fn, items)`` on the cluster ``cfg`` names (the encode shards' one): results in order.

    ``fn`` may be a ``functools.partial``: its arguments (the evaluation grid's context: corpus, full
    scores) are scattered to the workers once instead of travelling with every item.
    """
    from distributed import Client, LocalCluster

    address = dask_address(cfg)
    if address:
        probe(address, "Dask scheduler", f"check encode.address in params.yaml or ${ADDRESS_ENV}, and that "
              "`dask scheduler` runs there (or leave both unset for a local cluster)")
    quiet_dask()
    cluster = None if address else LocalCluster(**(cluster_kwargs or local_cluster_kwargs(cfg, jobs)))
    client = Client(address or cluster, set_as_default=False)

    def run(fn: Callable, items: list) -> list:
        func, args, kwargs = (fn.func, fn.args, fn.keywords) if isinstance(fn, functools.partial) else (fn, (), {})
        shared = [client.scatter(a, broadcast=True) for a in args]
        futures = [client.submit(func, *shared, item, pure=False, **kwargs) for item in items]
        return client.gather(futures)

    try:
        yield run
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
