"""Commands for the operator at night: they talk to a running service through its REST API.

Unlike ``bulwark user`` and ``bulwark token`` (an admin on the service's own machine, working on
its database), these go through ``/api/v1`` with an API token, so they obey roles, audit and
validation exactly as the dashboard does, and work from any host that reaches the service.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import typer

URL = typer.Option(
    "https://127.0.0.1:8080", "--url", envvar="BULWARK_URL", help="The service (BULWARK_URL)"
)
TOKEN = typer.Option(
    ..., "--token", envvar="BULWARK_TOKEN", help="An API token (BULWARK_TOKEN)", show_default=False
)


def _local_certificate() -> str | None:
    """The self-signed certificate `bulwark serve` made in this data dir, trusted as its own
    CA (so the commands on the service's host verify it rather than skip verification)."""
    from app.config import get_settings

    path = get_settings().tls_cert_path()
    return str(path) if path else None


class Api:
    client_factory = httpx.Client

    def __init__(self, url: str, token: str):
        kwargs: dict[str, Any] = {}
        if url.startswith("https://") and self.client_factory is httpx.Client:
            kwargs["verify"] = _local_certificate() or True
        self.client = self.client_factory(
            base_url=url.rstrip("/") + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            **kwargs,
        )

    def _check(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail") or response.text
            except ValueError:
                detail = response.text
            typer.echo(f"error: {response.status_code} {detail}", err=True)
            raise typer.Exit(1)
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        try:
            return self._check(self.client.get(path, params=params))
        except httpx.TransportError as exc:
            typer.echo(f"error: cannot reach {self.client.base_url}: {exc}", err=True)
            raise typer.Exit(1) from exc

    def post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            return self._check(self.client.post(path, json=body))
        except httpx.TransportError as exc:
            typer.echo(f"error: cannot reach {self.client.base_url}: {exc}", err=True)
            raise typer.Exit(1) from exc

    def find(self, collection: str, noun: str, name_or_id: str) -> dict[str, Any]:
        """One server or policy by id or by exact name."""
        if name_or_id.isdigit():
            return self.get(f"/{collection}/{name_or_id}")
        items = self.get(f"/{collection}", q=name_or_id, limit=200)["items"]
        exact = [item for item in items if item["name"] == name_or_id]
        if len(exact) != 1:
            typer.echo(f"error: no {noun} named '{name_or_id}'", err=True)
            raise typer.Exit(1)
        return exact[0]


def _age(at: str | None) -> str:
    if not at:
        return "-"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(at)).total_seconds()
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _when(at: str | None) -> str:
    return at[:16].replace("T", " ") if at else "-"


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def status(url: str = URL, token: str = TOKEN) -> None:
    """Protection state per Exchange server: its newest restore point and how old it is."""
    api = Api(url, token)
    rows = []
    for server in api.get("/servers", limit=200)["items"]:
        newest = api.get("/restore-points", server_id=server["id"], limit=1)["items"]
        if not newest:
            rows.append((server["name"], "UNPROTECTED", "-", "-", "-", "-"))
            continue
        point = newest[0]
        rows.append(
            (
                server["name"],
                "protected" if point["status"] == "available" else point["status"],
                _when(point["captured_at"]),
                _age(point["captured_at"]),
                point["consistency"],
                point["verification"],
            )
        )
    table(("SERVER", "STATE", "NEWEST POINT", "AGE", "CONSISTENCY", "VERIFIED"), rows)


def jobs(
    url: str = URL,
    token: str = TOKEN,
    state: str = typer.Option(None, help="queued, running, succeeded, failed, cancelled"),
    limit: int = typer.Option(20, min=1, max=200),
) -> None:
    """The newest jobs, with their state and progress."""
    params: dict[str, Any] = {"limit": limit}
    if state:
        params["state"] = state
    rows = [
        (
            str(j["id"]),
            j["kind"],
            j["state"],
            f"{j['progress_percent']:.0f}%",
            _when(j["created_at"]),
            (j["error"] or "")[:60],
        )
        for j in Api(url, token).get("/jobs", **params)["items"]
    ]
    table(("JOB", "KIND", "STATE", "DONE", "CREATED", "ERROR"), rows)


def backup(
    policy: str = typer.Argument(..., help="Policy name or id"),
    url: str = URL,
    token: str = TOKEN,
) -> None:
    """Back up a policy now (every server it covers); prints the job to watch."""
    api = Api(url, token)
    found = api.find("policies", "policy", policy)
    job = api.post("/jobs", {"kind": "backup", "policy_id": found["id"]})
    typer.echo(f"job {job['id']} queued: backup of policy '{found['name']}'")


def restore_points(
    server: str = typer.Argument(..., help="Server name or id"),
    url: str = URL,
    token: str = TOKEN,
    limit: int = typer.Option(20, min=1, max=200),
) -> None:
    """A server's restore points, newest first, with where each copy lives."""
    api = Api(url, token)
    found = api.find("servers", "server", server)
    points = api.get("/restore-points", server_id=found["id"], limit=limit)["items"]
    rows = [
        (
            str(p["id"]),
            _when(p["captured_at"]),
            p["method"],
            p["consistency"],
            p["status"],
            ",".join(sorted({c["location"] for c in p["copies"] if not c.get("removed_at")})),
            p["verification"],
        )
        for p in points
    ]
    table(("POINT", "CAPTURED", "METHOD", "CONSISTENCY", "STATUS", "COPIES", "VERIFIED"), rows)


def register(cli: typer.Typer) -> None:
    cli.command("status")(status)
    cli.command("jobs")(jobs)
    cli.command("backup")(backup)
    cli.command("restore-points")(restore_points)
