"""The encode flow on a 2-worker local Dask cluster: same features as one process, and a killed run resumes."""

from __future__ import annotations

import threading

import flows.encode as encode_module
import pytest
import torch
import yaml
from flows.encode import encode_flow

from anchorprune.backbones.base import LayerCapture
from anchorprune.backbones.mock import MockBackbone
from anchorprune.data.schema import load_dataset_dir
from anchorprune.features.cache import FeaturesCache

N_SHARD = 8
FORWARD = MockBackbone.encode_pages    # the real forward pass, whatever a test has patched since


class ModelCalls:
    """Counts the mocked backbone's forward passes (and the pages in each) across worker threads."""

    def __init__(self, monkeypatch, fail_at_call: int | None = None):
        self.pages: list[str] = []
        self.calls = 0
        self.lock = threading.Lock()
        def counted(backbone, pages, capture):
            with self.lock:
                self.calls += 1
                if fail_at_call is not None and self.calls >= fail_at_call:
                    raise RuntimeError("killed: the run stops here")
                self.pages += [p.content_hash for p in pages]
            return FORWARD(backbone, pages, capture)

        monkeypatch.setattr(MockBackbone, "encode_pages", counted)


@pytest.fixture
def sharded_project(project, monkeypatch):
    """The flow project with ``encode.runner: dask``: shards of 8 pages, a local cluster of 2 worker threads."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["encode"] = {"runner": "dask", "workers": 2, "shard_pages": N_SHARD}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    real = encode_module.dask_task_runner

    def in_process(cfg, shards=None):
        runner = real(cfg, shards)
        assert runner.cluster_kwargs["n_workers"] == 2 and runner.cluster_kwargs["threads_per_worker"] == 1
        runner.cluster_kwargs.update(processes=False)      # worker threads: the monkeypatched model is visible
        runner.cluster_kwargs.pop("env")
        return runner

    monkeypatch.setattr(encode_module, "dask_task_runner", in_process)
    return project


def _pages(project):
    return list(load_dataset_dir(project / "data" / "synth").pages())


def test_two_workers_equal_one_process(sharded_project, monkeypatch, tmp_path):
    calls = ModelCalls(monkeypatch)
    out = encode_flow(params="params.yaml", root=str(sharded_project))["mock"]
    pages = _pages(sharded_project)
    assert out["pages"] == len(pages) and out["sharded"]["encoded"] == len(pages)
    assert sorted(calls.pages) == sorted(p.content_hash for p in pages)     # every page once, none twice
    sharded = FeaturesCache(sharded_project / "cache" / "features")
    single = FeaturesCache(tmp_path / "single").get_or_encode(MockBackbone(), pages, LayerCapture.all(), progress=False)
    for page, want in zip(pages, single, strict=True):
        got = sharded.get(MockBackbone(), page, LayerCapture.all())
        assert got is not None and got.page_id == want.page_id
        assert torch.equal(got.embeddings, want.embeddings) and torch.equal(got.centrality, want.centrality)
        assert torch.equal(got.eos_attention, want.eos_attention) and torch.equal(got.positions, want.positions)


def test_killed_run_resumes_with_only_the_rest(sharded_project, monkeypatch):
    pages = _pages(sharded_project)
    killed = ModelCalls(monkeypatch, fail_at_call=3)     # shards are one batch each: the 3rd forward pass dies
    with pytest.raises(RuntimeError, match="killed"):
        encode_flow(params="params.yaml", root=str(sharded_project))
    cache = FeaturesCache(sharded_project / "cache" / "features")
    done = {p.content_hash for p in pages if cache.has(MockBackbone(), p, LayerCapture.all())}
    assert set(killed.pages) == done and N_SHARD <= len(done) < len(pages)   # finished shards stayed written
    assert not list((sharded_project / "cache" / "features").rglob("*.claim.*"))   # the dead shard freed its claims

    resumed = ModelCalls(monkeypatch)
    out = encode_flow(params="params.yaml", root=str(sharded_project))["mock"]
    assert out["pages"] == len(pages) and out["sharded"]["encoded"] == len(pages) - len(done)
    assert sorted(resumed.pages) == sorted({p.content_hash for p in pages} - done)   # only the rest, each once
    assert resumed.calls == -(-(len(pages) - len(done)) // N_SHARD)                  # one forward pass per shard


def test_runner_follows_config_and_environment(monkeypatch):
    from flows.encode import dask_task_runner

    from anchorprune.config import EncodeConfig

    monkeypatch.setenv("ANCHORPRUNE_DASK_ADDRESS", "tcp://scheduler:8786")
    assert dask_task_runner(EncodeConfig(address="tcp://other:1")).address == "tcp://scheduler:8786"
    monkeypatch.delenv("ANCHORPRUNE_DASK_ADDRESS")
    assert dask_task_runner(EncodeConfig(address="tcp://other:1")).address == "tcp://other:1"
    local = dask_task_runner(EncodeConfig(workers=3, torch_threads=2), shards=2)
    assert local.address is None and local.cluster_kwargs["processes"] is True
    assert local.cluster_kwargs["n_workers"] == 2                     # no idle workers for 2 shards
    env = local.cluster_kwargs["env"]
    assert env["OMP_NUM_THREADS"] == env["ANCHORPRUNE_WORKER_TORCH_THREADS"] == "2"
    assert env["PREFECT_API_URL"].startswith("http")                  # workers report to this run's API


GUARDED_CLIENT = """
import time
from distributed import Client, LocalCluster
from anchorprune.config import EncodeConfig
from flows.common import closing_on_signals, local_cluster_kwargs, quiet_dask
quiet_dask()
kw = local_cluster_kwargs(EncodeConfig(workers=1))
kw["env"].pop("PREFECT_API_URL", None)
with closing_on_signals(grace_s=5), LocalCluster(**kw) as cluster, Client(cluster) as client:
    fut = client.submit(time.sleep, 600)          # a shard that will not finish by itself
    print(" ".join(str(w.process.pid) for w in cluster.workers.values()), flush=True)
    fut.result()
"""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT", "SIGTERM"])
def test_an_interrupted_or_killed_client_leaves_no_worker(tmp_path, how):
    """Ctrl-C / SIGTERM close the local cluster within the grace period; after SIGKILL of the client its
    worker exits by itself (the preload guard). No traceback on the console."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from anchorprune.processes import pid_alive

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", GUARDED_CLIENT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert workers and all(pid_alive(p) for p in workers)
        time.sleep(1)
        proc.send_signal(getattr(signal, how))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 30
    while any(pid_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(pid_alive(p) for p in workers), "a worker outlived its client"
    if how != "SIGKILL":
        assert "CommClosedError" not in err and err.count("Traceback") <= 1, err[-2000:]


def test_quiet_console_prints_each_warning_once(tmp_path):
    """After ``quiet_dask()`` a warning repeated from two call sites and many iterations prints once; a
    different message still prints (so the filter is "once", not "ignore")."""
    import subprocess
    import sys

    script = tmp_path / "warn.py"
    script.write_text(
        "import warnings\n"
        "from flows.common import quiet_dask\n"
        "quiet_dask()\n"
        "def a(): warnings.warn('page p1 has no text layer', UserWarning)\n"
        "def b(): warnings.warn('page p1 has no text layer', UserWarning)\n"
        "for _ in range(5):\n"
        "    a(); b()\n"
        "warnings.warn('another thing', RuntimeWarning)\n")
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("UserWarning: page p1 has no text layer") == 1, done.stderr
    assert done.stderr.count("RuntimeWarning: another thing") == 1, done.stderr


@pytest.mark.parametrize("window", [1, 2])
def test_no_more_shards_in_flight_than_the_window(monkeypatch, window):
    """Shards are submitted as earlier ones finish: on a runner that would run all seven at once (Prefect's
    thread pool), never more than ``in_flight`` run together; all seven are reported."""
    import time

    from flows.encode import encode_shards_flow

    lock, running, peak = threading.Lock(), [0], [0]

    class Report:
        def __init__(self, n):
            self.n = n

        def to_dict(self):
            return {"encoded": self.n, "cached": 0, "deferred": 0}

    def fake_shard(bcfg, dataset_dir, page_ids, cache, capture, ttl):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return Report(len(page_ids))

    monkeypatch.setattr(encode_module, "encode_shard", fake_shard)
    shards = [[f"p{i}-{j}" for j in range(i + 1)] for i in range(7)]
    from anchorprune.config import BackboneConfig

    bcfg = BackboneConfig(name="mock", kind="mock", model_id="mock")
    out = encode_shards_flow(bcfg, "unused", shards, "unused", 60.0, window)
    assert out["encoded"] == sum(len(s) for s in shards) and len(out["shards"]) == 7
    assert 1 <= peak[0] <= window
