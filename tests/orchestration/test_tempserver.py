"""Prefect's temporary server stops when the process that started it is killed (kill -9, SIGTERM, SIGINT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anchorprune.orchestration.tempserver import watched_args

REPO = Path(__file__).resolve().parents[2]

# the piece of `anchorprune pipeline` that starts the temporary server: load_flow installs the watch,
# the first API call starts the server; the script prints the server's pid, then waits to be killed
SCRIPT = """
import sys, time
from anchorprune.orchestration.tempserver import watch_temporary_server
watch_temporary_server()
from prefect.server.api.server import SubprocessASGIServer
server = SubprocessASGIServer()
server.start()
print(server.server_process.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie that nobody reaps yet counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


def test_watched_args_only_rewrites_uvicorn():
    assert watched_args([sys.executable, "-m", "uvicorn", "--port", "5"], 3)[2:4] == [
        "anchorprune.orchestration.tempserver", "3"]
    assert watched_args(["git", "status"], 3) == ["git", "status"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["kill-9", "sigterm", "sigint"])
def test_temporary_server_stops_when_its_parent_dies(tmp_path, sig):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("PREFECT_API_URL", None)
    # a process started with SIGINT ignored (a background job of a non-interactive shell, e.g. `cmd &` in a CI
    # script) keeps it ignored, and Ctrl-C never reaches it: start the parent as a terminal would
    parent = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"the temporary server did not start (rc {parent.poll()})"
        server = int(line)
        assert alive(server)
        os.kill(parent.pid, sig)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 15
        while alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(server), f"the temporary server {server} outlived its parent ({sig.name})"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
