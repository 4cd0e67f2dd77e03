"""``anchorprune serve-search``: the search service (FastAPI + uvicorn) over the serving index."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from anchorprune.cli.errors import INDEX_OPEN, exit_on
from anchorprune.cli.options import ParamsOpt, load_workspace


def serve_search(
    params: ParamsOpt = Path("params.yaml"),
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 8000,
    check_interval: Annotated[float | None, typer.Option(
        help="seconds between reads of the serving pointer (default: every request for a local index, 1 s for "
             "Elasticsearch)")] = None,
    torch_threads: Annotated[int, typer.Option(
        min=0, help="torch intra-op threads of the search worker (0: torch's default). Requests are searched by "
                    "one worker, concurrent ones batched; 1 is fastest on a small or shared host")] = 1,
    resident_gib: Annotated[float | None, typer.Option(
        min=0, help="local index: decode the serving version into RAM (float32) when it fits this many GiB, "
                    "instead of converting its float16 / bits vectors at every search (default: the index's, "
                    "1 GiB; 0: never)")] = None,
) -> None:
    """Serve search over HTTP: GET /search?q=..., POST /search, /health, /pages/{id}, and the page viewer at /.

    The serving index version and its champion's query encoder load once; a swap (index build, rollback)
    is served from the next request on, without a restart.
    """
    import torch
    import uvicorn

    from anchorprune.serving.app import create_app
    from anchorprune.serving.state import SearchState

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if torch_threads:
        torch.set_num_threads(torch_threads)
    ws = load_workspace(params)
    with exit_on(INDEX_OPEN):
        state = SearchState(ws, check_interval=check_interval, torch_threads=torch_threads or None)
        if resident_gib is not None and hasattr(state.index, "resident_bytes"):
            state.index.resident_bytes = int(resident_gib * (1 << 30))
        state.current()                                     # open the version and load the encoder now
        state.search(["warm up"], 1)
    app = create_app(state)
    h = state.health()
    typer.echo(f"serving index {h['index']} v{h['version']} ({h['backend']}), model {h['model']['name']} "
               f"v{h['model']['version']}, on http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
