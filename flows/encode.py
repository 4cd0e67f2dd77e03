"""encode flow: per backbone, every page and query into the features cache; writes reports/encode (as `dvc repro`).

With ``encode.runner: dask`` (the default) the pages missing from the cache are split into shards
and mapped over ``encode-shard`` tasks on a Dask task runner: a local cluster (one worker process
per core, one torch thread each) or the scheduler at ``encode.address`` / ``$ANCHORPRUNE_DASK_ADDRESS``.
Each shard writes its entries as it goes, so a killed run resumes where it stopped.

Memory is bounded by design: a shard is a page *reference* (the dataset folder and its page ids),
never pixels or features. Each worker reads its own pages from disk, encodes them, writes the cache
entries and returns counts; the client plans from the corpus table alone and the encode stage then
walks the cache a chunk at a time. Peak memory is the backbone per worker plus one batch, flat in
the number of pages (docs/data.md, "Memory when encoding").
"""

from __future__ import annotations

import itertools

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from tqdm.auto import tqdm

from anchorprune.backbones.base import LayerCapture
from anchorprune.config import BackboneConfig, EncodeConfig
from anchorprune.features.encoding import encode_shard, shards_in_flight
from anchorprune.orchestration.pipeline import backbone_names
from anchorprune.orchestration.summary import encode_markdown
from anchorprune.stages.encode import plan_encode, stage_encode
from anchorprune.stages.workspace import Workspace
from flows.artifacts import publish
from flows.common import (
    IO_RETRIES,
    STAGE_CACHE,
    closing_on_signals,
    dask_address,
    local_cluster_kwargs,
    quiet_dask,
)


def dask_task_runner(cfg: EncodeConfig, shards: int | None = None):
    """The Dask task runner ``cfg`` asks for: an existing scheduler, or a local cluster of worker processes."""
    from prefect_dask import DaskTaskRunner

    address = dask_address(cfg)
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(cfg, shards))


@task(name="encode-shard", cache_policy=NO_CACHE, **IO_RETRIES)
def encode_shard_task(bcfg: BackboneConfig, dataset_dir: str, page_ids: list[str], cache: str,
                      capture: LayerCapture, claim_ttl_s: float) -> dict:
    return encode_shard(bcfg, dataset_dir, page_ids, cache, capture, claim_ttl_s).to_dict()


@flow(name="encode-shards")
def encode_shards_flow(bcfg: BackboneConfig, dataset_dir: str, shards: list[list[str]], cache: str,
                       claim_ttl_s: float = 900.0, in_flight: int | None = None) -> dict:
    """Run the shards (lists of page ids of ``dataset_dir``) on the flow's task runner; one progress bar.

    At most ``in_flight`` shards are submitted and unfinished at a time (a new one as each ends), so the
    client's memory does not grow with the number of shards. Returns page counts (encoded here, found
    cached, left to another run's claim) and ``shards``: each shard's report (counts, worker, timings, RSS).
    """
    window = in_flight or len(shards)
    todo = iter(shards)
    running: set = set()
    capture = LayerCapture.all()
    totals, reports = {"encoded": 0, "cached": 0, "deferred": 0}, []
    with tqdm(total=sum(len(s) for s in shards), desc=f"encode {bcfg.name} ({len(shards)} shards)",
              unit="page") as bar:
        while True:
            for shard in itertools.islice(todo, window - len(running)):
                running.add(encode_shard_task.submit(bcfg, str(dataset_dir), shard, cache, capture, claim_ttl_s))
            if not running:
                break
            fut = next(as_completed(list(running)))
            running.discard(fut)
            report = fut.result()
            reports.append(report)
            for k in totals:
                totals[k] += report[k]
            bar.update(sum(report[k] for k in totals))
    return {**totals, "shards": reports}


def encode_missing_pages(params: str, root: str, backbone: str) -> dict | None:
    """Run the shards of the pages missing from the cache on the configured runner (None: nothing to shard)."""
    ws = Workspace.from_params(params, root)
    enc = ws.settings.encode
    if enc.runner != "dask":
        return None
    bcfg = ws.settings.backbone(backbone)
    shards = plan_encode(ws, bcfg)
    if not shards:
        return None
    get_run_logger().info("%s: %d pages to encode in %d shards", backbone, sum(map(len, shards)), len(shards))
    quiet_dask()
    runner = dask_task_runner(enc, len(shards))
    # a local cluster's scheduler lives in this process: a window keeps it flat; a remote scheduler gets every
    # shard at once (its workers are not known here, and the task states live on its machine)
    window = None if dask_address(enc) else shards_in_flight(local_cluster_kwargs(enc, len(shards))["n_workers"])
    with closing_on_signals():      # the task runner closes its local cluster on exit, Ctrl-C or SIGTERM
        return encode_shards_flow.with_options(task_runner=runner)(bcfg, str(ws.dataset_dir), shards,
                                                               str(ws.features_dir), enc.claim_ttl_s,
                                                               window)


@task(name="encode-backbone", **STAGE_CACHE, **IO_RETRIES)
def encode_backbone(params: str, root: str, backbone: str, config_hash: str, data_version: str) -> dict:
    ws = Workspace.from_params(params, root)
    summary = stage_encode(ws, ws.settings.backbone(backbone))
    return {"pages": summary.pages, "queries": summary.queries, "num_layers": summary.num_layers}


@flow(name="encode")
def encode_flow(params: str = "params.yaml", root: str = ".", backbone: str | None = None) -> dict[str, dict]:
    ws = Workspace.from_params(params, root)
    version = ws.data_version()
    out = {}
    for name in backbone_names(ws, backbone):
        sharded = encode_missing_pages(params, root, name)
        out[name] = encode_backbone(params, root, name, ws.settings.config_hash(), version)
        if sharded:
            out[name] = {**out[name], "sharded": {k: v for k, v in sharded.items() if k != "shards"}}
        get_run_logger().info("%s: %s", name, out[name])
    publish("encode", encode_markdown(out))
    return out
