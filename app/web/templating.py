"""Jinja2 environment, filters and the one function every page renders through."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from app import __version__
from app.api.deps import csrf_token
from app.db.models import User
from app.security.roles import Permission, role_allows
from app.strategies import DECLARATIONS
from app.strategies.quiesce import QUIESCE_BUDGET_S, QUIESCE_WARNING_S
from app.web import labels

ROOT = Path(__file__).resolve().parent.parent.parent
TEMPLATES_DIR = ROOT / "templates"

# The pages load nothing from elsewhere; inline scripts and styles are not needed either.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def fmt_datetime(value: datetime | None) -> str:
    if value is None:
        return "—"
    return _as_utc(value).strftime("%Y-%m-%d %H:%M UTC")


def fmt_ago(value: datetime | None, now: datetime | None = None) -> str:
    """'3 min ago', 'in 2 h' — coarse, for tables."""
    if value is None:
        return "never"
    now = now or datetime.now(UTC)
    seconds = int((now - _as_utc(value)).total_seconds())
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        text = f"{seconds} s"
    elif seconds < 90 * 60:
        text = f"{max(1, round(seconds / 60))} min"
    elif seconds < 36 * 3600:
        text = f"{round(seconds / 3600)} h"
    else:
        text = f"{round(seconds / 86400)} d"
    return f"in {text}" if future else f"{text} ago"


def fmt_duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "—"
    seconds = int(((end or datetime.now(UTC)) - _as_utc(start)).total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def fmt_bytes(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # pragma: no cover


def fmt_age(seconds: float | None) -> str:
    """A length of time for RPO figures: '45 min', '3 h 10 min', '2 d 4 h'."""
    if seconds is None:
        return "—"
    minutes = max(0, int(seconds // 60))
    if minutes == 0:
        return "under 1 min"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def iso(value: datetime | None) -> str:
    return "" if value is None else _as_utc(value).isoformat()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        extensions=["jinja2.ext.do"],
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        datetime=fmt_datetime,
        ago=fmt_ago,
        bytes=fmt_bytes,
        iso=iso,
        label=labels.label,
        tone=labels.tone,
        backing=labels.backing,
        tools=labels.tools,
        plain_error=labels.plain_error,
        age=fmt_age,
    )
    env.globals.update(
        duration=fmt_duration,
        labels=labels,
        declarations=DECLARATIONS,
        Permission=Permission,
        version=__version__,
        QUIESCE_WARNING_S=QUIESCE_WARNING_S,
        QUIESCE_BUDGET_S=QUIESCE_BUDGET_S,
    )
    return env


templates = Jinja2Templates(env=_environment())


def flash(request: Request, message: str, tone: str = "ok") -> None:
    """A one-time notice shown on the next page (after a redirect)."""
    request.session.setdefault("flash", [])
    request.session["flash"] = [*request.session["flash"], [tone, message]][-5:]


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    user: User | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render a page (or a partial) with what every template may use."""
    base: dict[str, Any] = {
        "user": user,
        "csrf": csrf_token(request),
        "can": (lambda p: user is not None and role_allows(user.role, p)),
        "flashes": request.session.pop("flash", []) if not template.startswith("partials/") else [],
        "now": datetime.now(UTC),
        "path": request.url.path,
        "section": "",
    }
    base.update(context or {})
    return templates.TemplateResponse(
        request,
        template,
        base,
        status_code=status_code,
        headers={**SECURITY_HEADERS, **(headers or {})},
    )
