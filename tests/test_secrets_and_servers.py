"""No secret on screen, and servers that do not answer fail within the connect budget, in one line.

Every place that can show a URL is tried with the password ``p@ss:w%rd`` (it holds ``@``, ``:``
and ``%``) and a query-string token; whatever it printed, logged or wrote is searched for any
piece of them.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest
from typer.testing import CliRunner

from anchorprune.cli import app
from anchorprune.redact import redact_text, redact_url
from anchorprune.servers import (
    CONNECT_TIMEOUT_ENV,
    ServerUnreachableError,
    connect_timeout_s,
    endpoint,
    probe,
)

PASSWORD = "p@ss:w%rd"
TOKEN = "t0kenVALUE"
#: pieces of the secrets that must never show (the old doctor helper printed "ss:w%rd@")
PIECES = [PASSWORD, "ss:w%rd", "w%rd", "p@ss", "mlu:", TOKEN, "p%40ss"]
BUDGET = 2.0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def secret_url(scheme: str = "http", port: int | None = None, path: str = "/") -> str:
    return f"{scheme}://mlu:{PASSWORD}@127.0.0.1:{port or closed_port()}{path}?x=1&access_token={TOKEN}"


def assert_no_secret(text: str) -> None:
    for piece in PIECES:
        assert piece not in text, (piece, text)


@pytest.fixture(autouse=True)
def budget(monkeypatch):
    monkeypatch.setenv(CONNECT_TIMEOUT_ENV, str(BUDGET))


# ------------------------------------------------------------------ the one helper
@pytest.mark.parametrize("url", [
    f"http://mlu:{PASSWORD}@127.0.0.1:9/",
    f"https://mlu:{PASSWORD}@es.example.com:9243",
    "http://mlu:p%40ss%3Aw%25rd@host:5000/api",
    f"tcp://mlu:{PASSWORD}@sched:8786",
    f"s3://bucket/cache?X-Amz-Signature={TOKEN}&X-Amz-Credential=mlu&region=eu",
    f"postgresql+psycopg2://mlu:{PASSWORD}@db/mlflow",
    secret_url("https", 443, "/a/b#frag"),
])
def test_redact_url_hides_user_password_and_query_secrets(url):
    out = redact_url(url)
    assert_no_secret(out)
    assert "***" in out


def test_redact_url_keeps_what_is_not_secret():
    assert redact_url("https://es.example.com:9243/x?size=5") == "https://es.example.com:9243/x?size=5"
    assert redact_url(f"http://mlu:{PASSWORD}@127.0.0.1:9/") == "http://***@127.0.0.1:9/"
    assert redact_url("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert redact_url("/plain/path") == "/plain/path"


def test_redact_text_finds_urls_inside_messages():
    msg = f"API request to '{secret_url()}' failed with exception HTTPConnectionPool(host='127.0.0.1')"
    out = redact_text(msg)
    assert_no_secret(out)
    assert "API request to 'http://***@127.0.0.1:" in out and "HTTPConnectionPool(host='127.0.0.1')" in out


def test_the_old_helpers_are_gone():
    import anchorprune.cli.doctor as doctor
    import anchorprune.index.elasticsearch.server as server

    assert not hasattr(doctor, "_redact")
    assert server.redact_url is redact_url          # re-exported, not a second implementation


# ------------------------------------------------------------------ the connect budget
def test_connect_budget_from_the_environment(monkeypatch):
    assert connect_timeout_s() == BUDGET
    monkeypatch.delenv(CONNECT_TIMEOUT_ENV)
    assert connect_timeout_s() == 5.0
    for bad in ("0", "-1", "soon", "nan", "inf"):
        monkeypatch.setenv(CONNECT_TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=CONNECT_TIMEOUT_ENV):
            connect_timeout_s()


def test_endpoints():
    assert endpoint(f"http://mlu:{PASSWORD}@127.0.0.1:9/x") == ("127.0.0.1", 9)
    assert endpoint("https://es.example.com") == ("es.example.com", 443)
    assert endpoint("tcp://10.0.0.1") == ("10.0.0.1", 8786)
    assert endpoint("sqlite:///mlruns/mlflow.db") is None and endpoint("mlruns") is None
    assert endpoint("file:///tmp/x") is None


def one_line_unreachable(exc: BaseException, what: str) -> str:
    msg = str(exc)
    assert isinstance(exc, ServerUnreachableError) and isinstance(exc, ConnectionError)
    assert "\n" not in msg and what in msg and "does not answer" in msg, msg
    assert_no_secret(msg)
    return msg


def test_probe_closed_port_fails_fast_in_one_line():
    start = time.monotonic()
    with pytest.raises(ServerUnreachableError) as info:
        probe(secret_url(), "Some server", "check it")
    assert time.monotonic() - start < BUDGET
    assert one_line_unreachable(info.value, "Some server").endswith("check it")


def test_probe_server_that_never_accepts_gives_up_within_the_budget():
    """A listening socket whose backlog is full: connects hang until the budget runs out."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):          # fill the backlog (Linux accepts backlog + 1 before it stalls)
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", port))
                fillers.append(c)
            start = time.monotonic()
            try:
                probe(f"http://127.0.0.1:{port}/", "Stalled server", "check it", timeout=0.5)
            except ServerUnreachableError as exc:
                one_line_unreachable(exc, "Stalled server")
            assert time.monotonic() - start < 0.5 + 1.0
        finally:
            for c in fillers:
                c.close()


def test_mlflow_unreachable_fails_within_the_budget(monkeypatch, tmp_path, caplog):
    from anchorprune.config import TrackingConfig
    from anchorprune.tracking.tracker import Tracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", secret_url())
    start = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(ServerUnreachableError) as info:
        Tracker.from_config(TrackingConfig(uri="sqlite:///x.db", artifact_root=tmp_path, experiment="e"), tmp_path)
    assert time.monotonic() - start < BUDGET + 1
    assert "MLFLOW_TRACKING_URI" in one_line_unreachable(info.value, "MLflow tracking server")
    assert_no_secret(caplog.text)


def test_elasticsearch_unreachable_fails_within_the_budget(monkeypatch, caplog):
    from anchorprune.index.elasticsearch import ElasticsearchIndex

    monkeypatch.setenv("ELASTICSEARCH_URL", secret_url())
    start = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(ServerUnreachableError) as info:
        ElasticsearchIndex.from_env("pages")
    assert time.monotonic() - start < BUDGET + 1
    one_line_unreachable(info.value, "Elasticsearch")
    assert_no_secret(caplog.text)


def test_prefect_api_unreachable_fails_within_the_budget(monkeypatch):
    from anchorprune.orchestration.environment import check_prefect_api

    monkeypatch.setenv("PREFECT_API_URL", secret_url(path="/api"))
    start = time.monotonic()
    with pytest.raises(ServerUnreachableError) as info:
        check_prefect_api()
    assert time.monotonic() - start < BUDGET + 1
    assert "PREFECT_API_URL" in one_line_unreachable(info.value, "Prefect API")


def test_dask_scheduler_unreachable_fails_within_the_budget(monkeypatch):
    from flows.common import ADDRESS_ENV, dask_map

    from anchorprune.config import EncodeConfig

    monkeypatch.setenv(ADDRESS_ENV, f"tcp://mlu:{PASSWORD}@127.0.0.1:{closed_port()}")
    start = time.monotonic()
    with pytest.raises(ServerUnreachableError) as info, dask_map(EncodeConfig()):
        pass
    assert time.monotonic() - start < BUDGET + 1
    assert ADDRESS_ENV in one_line_unreachable(info.value, "Dask scheduler")


# ------------------------------------------------------------------ everything printed or written
def test_doctor_prints_no_secret_and_answers_within_the_budget(monkeypatch):
    runner = CliRunner()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", secret_url())
    monkeypatch.setenv("ELASTICSEARCH_URL", secret_url("https"))
    monkeypatch.setenv("PREFECT_API_URL", secret_url(path="/api"))
    start = time.monotonic()
    res = runner.invoke(app, ["doctor"])
    took = time.monotonic() - start
    assert res.exit_code == 0, res.output
    assert_no_secret(res.output)
    assert res.output.count("***@127.0.0.1") == 3 and "does not answer" in res.output
    assert took < 3 * BUDGET + 15        # the package versions are most of it


def test_mlflow_params_and_tags_hold_no_secret(tracking_config, caplog):
    from anchorprune.tracking.tracker import Tracker

    t = Tracker.from_config(tracking_config, tracking_config.artifact_root.parent)
    with caplog.at_level(logging.DEBUG), t.run("r", params={"cache": secret_url("s3"), "dask": secret_url("tcp")},
                                                 tags={"where": f"served by {secret_url('https')}"}) as run_id:
        t.set_tag(run_id, "es", secret_url("https"))
    run = t.client.get_run(run_id)
    stored = repr(run.data.params) + repr(run.data.tags)
    assert_no_secret(stored + caplog.text)
    assert "***@127.0.0.1" in run.data.tags["es"] and "***@127.0.0.1" in run.data.params["dask"]


def test_index_build_with_an_unreachable_mlflow_fails_fast_without_the_secret(tmp_path, monkeypatch, caplog):
    """The fault campaign's case: `index build` retried for minutes, then printed the URL with its password."""
    (tmp_path / "params.yaml").write_text("backbones: [{name: m, kind: mock, model_id: m}]\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", secret_url())
    start = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        res = CliRunner().invoke(app, ["index", "build", "--params", str(tmp_path / "params.yaml")])
    assert time.monotonic() - start < BUDGET + 5
    assert res.exit_code != 0
    shown = res.output + str(res.exception) + caplog.text
    assert_no_secret(shown)
    assert "MLflow tracking server at http://***@127.0.0.1:" in shown
