"""/metrics: database metrics per role, HTTP metrics, multiprocess workers, real Prometheus."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text

from app.api.deps import ReadSession, WriteSession
from app.config import Settings
from app.db.metrics import classify
from app.db.models import Organization
from app.db.router import DatabaseRouter
from app.main import create_app
from tests import pgcluster
from tests.conftest import Postgres, make_settings
from tests.test_health import serve, stop

ROOT = Path(__file__).parent.parent
PRIMARY = {"role": "primary", "pool": "primary"}
REPLICA = {"role": "replica", "pool": "replica-0"}
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/bin")
    assert found, f"{name} not found; run scripts/ensure-postgres (as root) to install it"
    return found


def samples(scrape: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(scrape)
        for s in family.samples
    }


def value(scrape: str, name: str, **labels: str) -> float:
    return samples(scrape).get((name, frozenset(labels.items())), 0.0)


def promtool_check_metrics(scrape: str) -> None:
    res = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=scrape,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (res.returncode, res.stdout + res.stderr) == (0, "")


def _routes(app: FastAPI) -> None:
    """Test scaffolding: one read and one write through the real session dependencies."""

    @app.get("/_m/orgs/{slug}")
    async def read_org(slug: str, session: ReadSession) -> dict[str, Any]:
        found = await session.scalar(select(Organization.id).where(Organization.slug == slug))
        return {"found": found is not None}

    @app.post("/_m/orgs")
    async def write_org(session: WriteSession) -> dict[str, Any]:
        session.add(Organization(name="Metrics", slug=uuid.uuid4().hex))
        await session.flush()
        return {}

    @app.get("/_m/slow")
    async def slow(session: ReadSession) -> dict[str, Any]:
        # The bound value must never reach the log.
        stmt = text("SELECT pg_sleep(0.2), CAST(:secret AS text)")
        await session.execute(stmt.bindparams(secret="pw-bound-parameter"))
        return {}


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    _routes(app)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


def pg_settings(postgres: Postgres, **overrides: Any) -> Settings:
    # One probe at start-up, then none during the test: counts stay exact.
    values: dict[str, Any] = {"replica_probe_interval_seconds": 3600}
    values.update(overrides)
    return make_settings(postgres.primary_url, postgres.replica_urls, **values)


# -- statement classification -------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT users.id FROM users WHERE users.id = $1", ("SELECT", "users")),
        ("  select count(*) from appointments a join users u on 1=1", ("SELECT", "appointments")),
        ('INSERT INTO "payments" (amount) VALUES ($1) RETURNING id', ("INSERT", "payments")),
        ("UPDATE appointments SET status=$1 WHERE id=$2", ("UPDATE", "appointments")),
        ("DELETE FROM reviews WHERE id = ?", ("DELETE", "reviews")),
        ("SELECT 1", ("SELECT", "other")),
        ("SELECT * FROM pg_stat_activity", ("SELECT", "other")),
        ("SET LOCAL statement_timeout = 5000", ("other", "other")),
        ("WITH x AS (SELECT 1) SELECT * FROM x", ("other", "other")),
    ],
)
def test_classify_is_bounded(statement: str, expected: tuple[str, str]) -> None:
    assert classify(statement) == expected


# -- counts per role, HTTP metrics, promtool ---------------------------------------------------


async def test_queries_counted_per_role_and_scrape_is_valid(postgres: Postgres) -> None:
    async with serving(pg_settings(postgres)) as (_, client):
        before = (await client.get("/metrics")).text
        reads, writes = 7, 4
        for _ in range(writes):
            assert (await client.post("/_m/orgs")).status_code == 200
        for i in range(reads):
            assert (await client.get(f"/_m/orgs/slug-{i}")).status_code == 200
        assert (await client.get("/health/db")).status_code == 200
        response = await client.get("/metrics")
        after = response.text

    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    sel = {"operation": "SELECT", "table": "organizations", "outcome": "success"}
    ins = {"operation": "INSERT", "table": "organizations", "outcome": "success"}
    assert grew("database_queries_total", **sel, role="replica") == reads
    assert grew("database_queries_total", **sel, role="primary") == 0
    assert grew("database_queries_total", **ins, role="primary") == writes
    assert grew("database_query_duration_seconds_count", role="replica") == reads
    assert grew("database_routing_total", intent="read", target="replica") == reads
    # HTTP metrics by route template, without probes and scrapes.
    assert grew("http_requests_total", handler="/_m/orgs/{slug}", method="GET", status="2xx") == 7
    assert not re.search(r'handler="/_m/orgs/slug-', after)
    assert 'handler="/health/' not in after
    assert 'handler="/metrics"' not in after
    # Pools are read at scrape time; every role that has an engine shows up.
    # The default pools: a fixed size per worker from the connection budget.
    assert value(after, "database_connection_pool_size", role="primary", pool="primary") == 30
    assert value(after, "database_connection_pool_size", role="replica", pool="replica-0") == 30
    assert "pw-" not in after
    promtool_check_metrics(after)


async def test_slow_queries_counted_and_logged_without_parameters(
    postgres: Postgres, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(pg_settings(postgres, slow_query_seconds=0.15)) as (_, client):
        before = (await client.get("/metrics")).text
        with caplog.at_level(logging.WARNING, logger="app.db.slow_queries"):
            assert (await client.get("/_m/slow")).status_code == 200
            assert (await client.get("/_m/orgs/fast")).status_code == 200
        after = (await client.get("/metrics")).text
    slow = value(after, "database_slow_queries_total", role="replica") - value(
        before, "database_slow_queries_total", role="replica"
    )
    records = [r for r in caplog.records if r.name == "app.db.slow_queries"]
    # On a busy machine the fast query may cross the line too: whatever is counted is
    # logged, and only what took longer than SLOW_QUERY_SECONDS is either.
    assert slow == sum(1 for r in records if r.__dict__["role"] == "replica")
    for record in records:
        assert record.getMessage() == "slow query"
        assert record.__dict__["duration_seconds"] >= 0.15
        assert len(record.__dict__["statement"]) <= 200
        assert "pw-" not in str(record.__dict__)
    [entry] = [r.__dict__ for r in records if r.__dict__["statement"].startswith("SELECT pg_sleep")]
    assert entry["role"] == "replica"
    assert entry["statement"].startswith("SELECT pg_sleep(0.2)")


async def test_pool_gauges_and_timeouts(postgres: Postgres) -> None:
    settings = pg_settings(postgres, pool_size=2, max_overflow=0, pool_timeout=0.5)
    async with serving(settings) as (app, client):
        router: DatabaseRouter = app.state.db
        before = (await client.get("/metrics")).text
        assert value(before, "database_connection_pool_checked_out", **PRIMARY) == 0
        held = [await router.primary.connect() for _ in range(2)]
        try:
            during = (await client.get("/metrics")).text
            response = await client.post("/_m/orgs")
        finally:
            for conn in held:
                await conn.close()
        after = (await client.get("/metrics")).text
    assert value(during, "database_connection_pool_checked_out", **PRIMARY) == 2
    assert value(during, "database_connection_pool_checked_in", **PRIMARY) == 0
    assert value(during, "database_connection_pool_size", **PRIMARY) == 2
    assert response.status_code == 503
    timeouts = value(after, "database_pool_timeouts_total", role="primary") - value(
        before, "database_pool_timeouts_total", role="primary"
    )
    assert timeouts == 1
    assert value(after, "database_connection_pool_checked_out", **PRIMARY) == 0
    assert value(after, "http_requests_total", handler="/_m/orgs", method="POST", status="5xx")


# -- several workers, scraped by a real Prometheus ------------------------------------------


@pytest.fixture(scope="module")
def workers(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`bookedbarber serve --workers 2` on the session PostgreSQL, in multiprocess mode."""
    tmp = tmp_path_factory.mktemp("workers")
    multiproc = tmp / "multiproc"
    multiproc.mkdir()
    env = {
        "DATABASE_URL": postgres.primary_url,
        "REPLICA_URLS": ",".join(postgres.replica_urls),
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "REPLICA_PROBE_INTERVAL_SECONDS": "3600",
        # No consistency rounds: theirs are statements on the primary too, and would land
        # in the counts test_workers_aggregate_into_one_scrape takes.
        "REPLICA_CONSISTENCY_INTERVAL_SECONDS": "0",
        "STARTUP_PROBE_WAIT_SECONDS": "60",
        "POOL_SIZE": "3",
        "REPLICA_POOL_SIZE": "2",
    }
    proc, base, log = serve(tmp, env, "--workers", "2")
    try:
        yield base
    finally:
        stop(proc)
    assert "pw-" not in log.read_text(errors="replace")


def _scrape(base: str) -> str:
    response = httpx.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def _poll(what: str, check: Any, limit: float = 30.0) -> Any:
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {limit}s waiting for {what}"
        time.sleep(0.1)


def test_workers_aggregate_into_one_scrape(workers: str) -> None:
    # Both workers have started (each opened its pools): livesum adds them up.
    _poll(
        "both workers' pools",
        lambda: value(_scrape(workers), "database_connection_pool_size", **PRIMARY) == 6,
    )
    labels = {"operation": "SELECT", "table": "other", "role": "primary", "outcome": "success"}
    # A worker's start-up statements (first probe round) may still be landing: wait until
    # the count holds still before taking the baseline.
    scrape = _scrape(workers)
    for _ in range(40):
        time.sleep(0.5)
        again = _scrape(workers)
        if value(again, "database_queries_total", **labels) == value(
            scrape, "database_queries_total", **labels
        ):
            break
        scrape = again
    assert value(scrape, "database_connection_pool_size", **REPLICA) == 4
    before = value(scrape, "database_queries_total", **labels)
    n = 30
    with httpx.Client(base_url=workers, timeout=10) as http:
        for _ in range(n):  # new connections: the two workers share them
            assert http.get("/health/db", headers={"Connection": "close"}).status_code == 200
        for _ in range(n):  # reads take pooled replica connections (health has its own)
            response = http.get(
                "/api/v1/users", params={"limit": 1}, headers={"Connection": "close"}
            )
            assert response.status_code == 200
    after = _scrape(workers)
    assert value(after, "database_queries_total", **labels) - before == n
    # Every connection went back: each worker's gauges saw the checkins.
    assert value(after, "database_connection_pool_checked_out", **PRIMARY) == 0
    assert value(after, "database_connection_pool_checked_out", **REPLICA) == 0
    assert value(after, "database_connection_pool_checked_in", **REPLICA) >= 1
    assert "pid=" not in after
    promtool_check_metrics(after)


def test_promtool_accepts_alert_rules() -> None:
    res = subprocess.run(
        [tool("promtool"), "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 11 rules found" in res.stdout


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return [e.replace("$__rate_interval", "1m").replace("$job", ".*") for e in exprs]


def test_prometheus_scrapes_the_service(workers: str, tmp_path: Path) -> None:
    port = pgcluster.free_port()
    target = workers.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {"job_name": "bookedbarber", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:

        def query(promql: str) -> list[dict[str, Any]] | None:
            try:
                response = httpx.get(f"{api}/query", params={"query": promql}, timeout=5)
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
                return None
            if response.status_code == 503:  # "Service Unavailable" while its TSDB starts
                return None
            body = response.json()
            assert body["status"] == "success", (promql, body)
            result: list[dict[str, Any]] = body["data"]["result"]
            return result

        httpx.get(f"{workers}/health/db", timeout=10)
        found = _poll(
            "database_queries_total in Prometheus",
            lambda: query('database_queries_total{job="bookedbarber",role="primary"}'),
        )
        assert {s["metric"]["operation"] for s in found} >= {"SELECT"}
        [up] = _poll("up", lambda: query('up{job="bookedbarber"}'))
        assert up["value"][1] == "1"
        [pool] = _poll(
            "pool size", lambda: query('sum(database_connection_pool_size{role="primary"})')
        )
        assert pool["value"][1] == "6"
        # Prometheus loaded the alert rules, and every dashboard query is valid PromQL.
        groups = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
        assert {g["name"] for g in groups} == {"bookedbarber-database", "bookedbarber-http"}
        for promql in _dashboard_queries():
            assert query(promql) is not None
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def test_dashboard_and_alerts_use_exported_metrics() -> None:
    """Every metric the dashboard and the alerts name is one the service exports."""
    app = create_app(make_settings("sqlite+aiosqlite:///:memory:"))
    exported = {"up"}
    for family in app.state.metrics_registry.collect():
        exported.add(family.name)
        exported.update(s.name for s in family.samples)
        if family.type == "counter":
            exported.add(family.name + "_total")
        if family.type == "histogram":
            exported.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
    exported.update(f"database_connection_pool_{n}" for n in _POOL_NAMES)
    text_ = DASHBOARD.read_text() + ALERTS.read_text()
    named = set(re.findall(r"\b((?:database|http)_[a-z_]+)\b", text_)) | {"up"}
    assert named - exported == set()


_POOL_NAMES = ("size", "checked_out", "overflow", "checked_in")


def test_deployment_probes_and_security() -> None:
    deployment, *_ = yaml.safe_load_all((ROOT / "deploy/k8s/deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    [api] = pod["containers"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert api["securityContext"]["allowPrivilegeEscalation"] is False
    assert api["resources"]["requests"]
    assert api["resources"]["limits"]
    job = yaml.safe_load((ROOT / "deploy/k8s/migrate-job.yaml").read_text())
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]


async def test_each_app_counts_into_its_own_registry(sqlite_url: str) -> None:
    """Metrics belong to the app that made them: two apps in one process share nothing."""
    first, second = create_app(make_settings(sqlite_url)), create_app(make_settings(sqlite_url))
    assert first.state.metrics_registry is not second.state.metrics_registry
    async with (
        first.router.lifespan_context(first),
        second.router.lifespan_context(second),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://t") as c,
    ):
        for _ in range(3):
            assert (await c.get(f"/api/v1/users/{2**62}")).status_code == 404
        labels = {"handler": "/api/v1/users/{user_id}", "method": "GET", "status": "4xx"}
        assert first.state.metrics_registry.get_sample_value("http_requests_total", labels) == 3
        assert second.state.metrics_registry.get_sample_value("http_requests_total", labels) is None
        routed = {"intent": "read", "target": "primary"}
        assert first.state.metrics_registry.get_sample_value("database_routing_total", routed) == 3
        assert not second.state.metrics_registry.get_sample_value("database_routing_total", routed)


def test_http_series_are_the_instrumentators_own() -> None:
    """The hand-declared HTTP series (kept for the lane's sake) equal the library's default
    set: names, types, help, labels, buckets and values for the same request."""
    from prometheus_client import CollectorRegistry
    from prometheus_fastapi_instrumentator import metrics as library
    from starlette.requests import Request
    from starlette.responses import Response

    from app.http_metrics import HttpMetrics

    theirs, ours = CollectorRegistry(), CollectorRegistry()
    default = library.default(registry=theirs)
    mine = HttpMetrics(ours)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/users/1",
        "headers": [(b"content-length", b"17")],
        "query_string": b"",
    }
    for seconds, size in ((0.003, 600), (0.7, 20), (12.0, 0)):
        response = Response(b"x" * size, media_type="application/json")
        default(library.Info(Request(scope), response, "GET", "/u/{id}", "2xx", seconds))
        mine.observe("GET", "2xx", "/u/{id}", seconds, 17, size)

    def families(registry: CollectorRegistry) -> dict[str, Any]:
        return {
            f.name: (
                f.type,
                f.documentation,
                sorted((s.name, sorted(s.labels.items()), s.value) for s in f.samples),
            )
            for f in registry.collect()
        }

    def stable(found: dict[str, Any]) -> dict[str, Any]:
        # `_created` samples carry the creation time of each series.
        return {
            name: (kind, doc, [s for s in samples if not s[0].endswith("_created")])
            for name, (kind, doc, samples) in found.items()
        }

    assert stable(families(ours)) == stable(families(theirs))
