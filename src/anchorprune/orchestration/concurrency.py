"""One rebuild of an index at a time, on every worker and every host: a Prefect global concurrency limit per index.

The limit lives on the Prefect server (``reindex-<index name>``, one slot), so it holds across
processes, workers and machines that talk to that server; ``stage_index``'s file lock holds only
on one file system. A deployment's own ``concurrency_limit`` is per deployment; this one is per
index, whichever deployment (served, on a work pool) or ad-hoc flow run rebuilds it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

log = logging.getLogger(__name__)

#: how long a holder's lease lasts without renewal: a worker that dies frees the slot after this long
LEASE_SECONDS = 300


def index_limit_name(index: str) -> str:
    """The global concurrency limit that serialises rebuilds of ``index``.

    >>> index_limit_name("anchorprune")
    'reindex-anchorprune'
    """
    return f"reindex-{index}"


def ensure_index_limit(index: str) -> GlobalConcurrencyLimitResponse:
    """Create the index's global limit (one slot) unless it exists; idempotent, safe when two hosts race.

    An existing limit is left as the operator set it (a warning says when it no longer
    serialises: more than one slot, or inactive).
    """
    name = index_limit_name(index)
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
                log.info("created global concurrency limit %s (1 slot)", name)
            except ObjectAlreadyExists:
                pass  # another worker created it between our read and our create
            limit = client.read_global_concurrency_limit_by_name(name)
    if limit.limit != 1 or not limit.active:
        log.warning("global concurrency limit %s has %d slot(s) and is %s: rebuilds of index %s may overlap "
                    "(the index's compare-and-swap still keeps it from going backwards); "
                    "`prefect global-concurrency-limit update %s --limit 1 --enable` restores one at a time",
                    name, limit.limit, "active" if limit.active else "INACTIVE", index, name)
    return limit


@contextmanager
def index_build_slot(index: str) -> Iterator[None]:
    """Hold the index's one slot for the block; waits (as long as it takes) while another run holds it.

    A lost lease renewal (server briefly unreachable) does not kill a long rebuild: the
    compare-and-swap at the end refuses to move the index backwards if another one got in.
    """
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.runtime import flow_run

    ensure_index_limit(index)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=flow_run.id) if flow_run.id else None
    with concurrency(index_limit_name(index), occupy=1, strict=True, lease_duration=LEASE_SECONDS,
                     holder=holder, raise_on_lease_renewal_failure=False):
        yield
