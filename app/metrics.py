"""Prometheus metrics."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Receive, Scope, Send


class HttpMetrics:
    """Counts and times requests by route template (not raw path, to keep labels few)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry):
        self.app = app
        self.requests = Counter(
            "bulwark_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "bulwark_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def _send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.requests.labels(scope["method"], template, str(status["code"])).inc()
            self.latency.labels(scope["method"], template).observe(time.perf_counter() - start)


class ProtectionCollector:
    """What operators alert on, read from the catalog at scrape time.

    Timestamps rather than ages where Prometheus can compute the age itself
    (``time() - bulwark_server_newest_restore_point_timestamp_seconds``), so a scrape that
    is late does not make the data look older than it is. Each scrape is a handful of grouped
    queries, never one per server.
    """

    def __init__(self, db):
        self.db = db

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from app.metrics_queries import protection_figures

        with self.db.session() as session:
            figures = protection_figures(session)

        def family(name: str, doc: str, labels: list[str], rows) -> GaugeMetricFamily:
            metric = GaugeMetricFamily(name, doc, labels=labels)
            for label_values, value in rows:
                metric.add_metric(list(label_values), value)
            return metric

        yield family(
            "bulwark_server_newest_restore_point_timestamp_seconds",
            "When the newest available restore point of an Exchange server was captured",
            ["server"],
            figures.newest,
        )
        yield family(
            "bulwark_server_newest_verified_restore_point_timestamp_seconds",
            "When the newest verified restore point of an Exchange server was captured",
            ["server"],
            figures.newest_verified,
        )
        yield family(
            "bulwark_server_rpo_objective_seconds",
            "The strictest recovery point objective of the enabled policies covering a server",
            ["server"],
            figures.objective,
        )
        yield family(
            "bulwark_server_restore_point_age_seconds",
            "Age of the newest available restore point (no sample: none yet)",
            ["server"],
            figures.age,
        )
        yield family(
            "bulwark_server_protected",
            "1 when an enabled policy covers the server and it has a restore point, else 0",
            ["server"],
            figures.protected,
        )
        yield family(
            "bulwark_mailbox_newest_restore_point_timestamp_seconds",
            "When the newest mailbox-level backup of a mailbox finished",
            ["mailbox"],
            figures.mailbox_newest,
        )
        yield family(
            "bulwark_jobs", "Jobs in the catalog by kind and state", ["kind", "state"], figures.jobs
        )
        yield family(
            "bulwark_job_duration_seconds_sum",
            "Total run time of finished jobs by kind and state",
            ["kind", "state"],
            figures.duration_sum,
        )
        yield family(
            "bulwark_job_duration_seconds_count",
            "Finished jobs with a run time, by kind and state",
            ["kind", "state"],
            figures.duration_count,
        )
        yield family(
            "bulwark_job_bytes_read",
            "Bytes read by succeeded jobs, by kind",
            ["kind"],
            figures.bytes_read,
        )
        yield family(
            "bulwark_repository_stored_bytes",
            "Bytes on the repository's storage at its last measurement",
            ["repository"],
            figures.stored,
        )
        yield family(
            "bulwark_repository_logical_bytes",
            "Bytes the repository's restore points hold, before dedup and compression",
            ["repository"],
            figures.logical,
        )
        yield family(
            "bulwark_repository_free_bytes",
            "Free space where the repository lives, at its last measurement",
            ["repository"],
            figures.free,
        )
        yield family(
            "bulwark_repository_measured_timestamp_seconds",
            "When the repository's usage was last measured",
            ["repository"],
            figures.measured,
        )
        yield family(
            "bulwark_proxy_last_heartbeat_timestamp_seconds",
            "The last heartbeat of each worker (proxy)",
            ["proxy"],
            figures.heartbeats,
        )
