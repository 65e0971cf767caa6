"""Backup policies: list, read, create, change, enable/disable, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from app.api.problems import Problem
from app.api.routes.policies import (
    SORTABLE,
    create_policy,
    delete_policy,
    get_policy,
    update_policy,
)
from app.api.schemas.jobs import JobCreate
from app.api.schemas.policies import PolicyCreate, PolicyUpdate
from app.db.models import Connection, ExchangeServer, Policy, RestorePoint
from app.db.types import utcnow
from app.domain.connections import ConnectionKind
from app.domain.jobs import JobKind
from app.domain.protection import (
    WITHOUT_COPIES,
    Consistency,
    ProtectionMethod,
    RestoreCapability,
)
from app.security.roles import Permission
from app.web.actions import start_job
from app.web.context import Ctx, Form, signed_in
from app.web.errors import WebRoute, is_htmx
from app.web.forms import (
    FormState,
    apply_problem,
    apply_validation_error,
    checkbox,
    optional,
    text,
    values_of,
)
from app.web.paging import page_of
from app.web.queries import names, policy_job_history, recent_jobs
from app.web.templating import flash, render

router = APIRouter(route_class=WebRoute)
MANAGE = Permission.MANAGE_PROTECTION

NUMBERS = (
    "script_timeout_s",
    "keep_on_primary",
    "keep_last",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
)
# Every field of the form, in the order the audit log lists changes.
FIELDS = (
    "name",
    "description",
    "enabled",
    "method",
    "consistency",
    "schedule_cron",
    "rpo_minutes",
    "pre_script",
    "post_script",
    *NUMBERS,
    "repository_id",
    "compliance_retention_days",
)
DEFAULTS = {name: PolicyCreate.model_fields[name].default for name in NUMBERS}
# Restores the policy must make possible (checked against each target's layout by the API).
HAS_RESTORES_NEEDED = "restores_needed" in PolicyCreate.model_fields


def _targets(form: FormData, state: FormState) -> list[dict[str, int | None]]:
    """Checkbox values: ``<server id>`` for the whole server, ``<server>:<database>``."""
    targets = []
    for raw in form.getlist("targets"):
        server, _, database = str(raw).partition(":")
        try:
            targets.append(
                {"server_id": int(server), "database_id": int(database) if database else None}
            )
        except ValueError:
            state.add("targets", f"'{raw}' is not a server or database of this list.")
    return targets


def _fields(form: FormData, state: FormState) -> dict[str, Any]:
    mode = text(form, "schedule_mode")
    if mode not in ("cron", "rpo"):
        mode = (
            "rpo"
            if optional(form, "rpo_minutes") and not optional(form, "schedule_cron")
            else "cron"
        )
    data: dict[str, Any] = {
        "name": text(form, "name"),
        "description": text(form, "description"),
        "enabled": checkbox(form, "enabled"),
        "method": text(form, "method"),
        "consistency": text(form, "consistency"),
        "schedule_cron": optional(form, "schedule_cron") if mode == "cron" else None,
        "rpo_minutes": optional(form, "rpo_minutes") if mode == "rpo" else None,
        "pre_script": optional(form, "pre_script"),
        "post_script": optional(form, "post_script"),
        "repository_id": optional(form, "repository_id"),
        "compliance_retention_days": optional(form, "compliance_retention_days"),
        "targets": _targets(form, state),
    }
    for name in NUMBERS:
        data[name] = text(form, name)
    if HAS_RESTORES_NEEDED:
        data["restores_needed"] = [str(v) for v in form.getlist("restores_needed")]
    data.update(_notification_fields(form))
    return data


def _notification_fields(form: FormData) -> dict[str, Any]:
    """Who hears about failures and RPO breaches. The webhook secret is write-only: left
    empty, the stored one stays."""
    data: dict[str, Any] = {
        "notify_on": [str(v) for v in form.getlist("notify_on")],
        "notify_webhook_url": optional(form, "notify_webhook_url"),
        # One address a line (commas and spaces also separate them).
        "notify_emails": text(form, "notify_emails").replace(",", " ").split(),
    }
    secret = optional(form, "notify_webhook_secret")
    if secret is not None:
        data["notify_webhook_secret"] = secret
    return data


def _notification_changes(policy: Policy, body: PolicyCreate) -> set[str]:
    changed = set()
    if sorted(body.notify_on) != sorted(policy.notify_on or []):
        changed.add("notify_on")
    url = str(body.notify_webhook_url) if body.notify_webhook_url is not None else None
    if url != policy.notify_webhook_url:
        changed.add("notify_webhook_url")
    if [str(e) for e in body.notify_emails] != list(policy.notify_emails or []):
        changed.add("notify_emails")
    if body.notify_webhook_secret is not None:
        changed.add("notify_webhook_secret")
    return changed


def _values(policy: Policy) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: "" if getattr(policy, name) is None else str(getattr(policy, name)) for name in FIELDS
    }
    values["enabled"] = "on" if policy.enabled else ""
    values["method"] = policy.method.value
    values["consistency"] = policy.consistency.value
    values["schedule_mode"] = "rpo" if policy.rpo_minutes is not None else "cron"
    values["targets"] = [
        str(t.server_id) if t.database_id is None else f"{t.server_id}:{t.database_id}"
        for t in policy.targets
    ]
    values["restores_needed"] = [str(c) for c in getattr(policy, "restores_needed", None) or []]
    values["notify_on"] = list(policy.notify_on or [])
    values["notify_webhook_url"] = policy.notify_webhook_url or ""
    values["notify_emails"] = "\n".join(policy.notify_emails or [])
    return values


def _form_page(
    ctx: Ctx, state: FormState, policy: Policy | None = None, status_code: int = 200
) -> Response:
    servers = ctx.session.scalars(
        select(ExchangeServer)
        .options(selectinload(ExchangeServer.databases))
        .order_by(ExchangeServer.name)
    ).all()
    repositories = ctx.session.scalars(
        select(Connection)
        .where(Connection.kind == ConnectionKind.REPOSITORY)
        .order_by(Connection.name)
    ).all()
    for name in ("targets", "restores_needed", "notify_on"):
        state.values.setdefault(name, [])
        if isinstance(state.values[name], str):
            state.values[name] = [state.values[name]]
    return render(
        ctx.request,
        "policies/form.html",
        {
            "section": "policies",
            "policy": policy,
            "form": state,
            "methods": list(ProtectionMethod),
            "consistencies": list(Consistency),
            "servers": servers,
            "repositories": repositories,
            "capabilities": list(RestoreCapability) if HAS_RESTORES_NEEDED else [],
        },
        user=ctx.user,
        status_code=status_code,
    )


def _schedule(policy: Policy) -> str:
    if policy.rpo_minutes is not None:
        return f"RPO {policy.rpo_minutes} min"
    return f"cron {policy.schedule_cron}"


@router.get("/policies")
def policy_list(request: Request, page: int = 1) -> Response:
    with signed_in(request) as ctx:
        items, pager = page_of(
            ctx.session,
            select(Policy),
            page=page,
            sortable=SORTABLE,
            default_sort="name",
            params={},
        )
        return render(
            request,
            "policies/list.html",
            {
                "section": "policies",
                "items": items,
                "pager": pager,
                "repositories": names(ctx.session, Connection, (p.repository_id for p in items)),
                "schedule": _schedule,
            },
            user=ctx.user,
        )


@router.get("/policies/new")
def policy_new(request: Request) -> Response:
    with signed_in(request, MANAGE) as ctx:
        values: dict[str, Any] = {
            **{k: str(v) for k, v in DEFAULTS.items()},
            "enabled": "on",
            "schedule_mode": "cron",
            "schedule_cron": "0 2 * * *",
            "method": ProtectionMethod.VM_IMAGE.value,
            "consistency": Consistency.CRASH.value,
            "notify_on": list(PolicyCreate.model_fields["notify_on"].default_factory()),
        }
        return _form_page(ctx, FormState(values=values))


def _read_form(form: FormData) -> tuple[FormState, dict[str, Any]]:
    state = FormState(values=values_of(form))
    state.values["targets"] = [str(v) for v in form.getlist("targets")]
    state.values["restores_needed"] = [str(v) for v in form.getlist("restores_needed")]
    state.values["notify_on"] = [str(v) for v in form.getlist("notify_on")]
    state.values.pop("notify_webhook_secret", None)  # never sent back to the browser
    return state, _fields(form, state)


@router.post("/policies/new")
def policy_create(request: Request, form: Form) -> Response:
    with signed_in(request, MANAGE, form=form, check_form=True) as ctx:
        state, data = _read_form(form)
        try:
            body = PolicyCreate.model_validate(data)
        except ValidationError as exc:
            apply_validation_error(state, exc, model_field="schedule")
            return _form_page(ctx, state, status_code=422)
        if state.failed:
            return _form_page(ctx, state, status_code=422)
        try:
            policy = create_policy(body, ctx.session, ctx.principal, request)
        except Problem as exc:
            ctx.session.rollback()
            apply_problem(state, exc)
            return _form_page(ctx, state, status_code=exc.status)
        flash(request, f"Policy '{policy.name}' created.")
        return RedirectResponse(f"/policies/{policy.id}", status_code=303)


@router.get("/policies/{policy_id}")
def policy_detail(request: Request, policy_id: int) -> Response:
    with signed_in(request) as ctx:
        policy = get_policy(ctx.session, policy_id)
        servers = ctx.session.scalars(
            select(ExchangeServer)
            .where(ExchangeServer.id.in_({t.server_id for t in policy.targets}))
            .options(selectinload(ExchangeServer.databases))
        ).all()
        by_id = {s.id: s for s in servers}
        databases = {d.id: d for s in servers for d in s.databases}
        targets = [
            (by_id.get(t.server_id), databases.get(t.database_id) if t.database_id else None)
            for t in policy.targets
        ]
        count, newest = ctx.session.execute(
            select(func.count(RestorePoint.id), func.max(RestorePoint.captured_at)).where(
                RestorePoint.policy_id == policy.id,
                RestorePoint.status.notin_(WITHOUT_COPIES),
            )
        ).one()
        repository = (
            ctx.session.get(Connection, policy.repository_id) if policy.repository_id else None
        )
        rpo_missed = None
        if policy.rpo_minutes is not None and policy.enabled:
            # Measured from the newest restore point, or from creation while there is none.
            since = newest or policy.created_at
            rpo_missed = (utcnow() - since).total_seconds() > policy.rpo_minutes * 60
        return render(
            request,
            "policies/detail.html",
            {
                "section": "policies",
                "policy": policy,
                "targets": targets,
                "repository": repository,
                "points": count,
                "newest_point": newest,
                "rpo_missed": rpo_missed,
                "jobs": recent_jobs(ctx.session, 10, policy_id=policy.id),
                "history": policy_job_history(ctx.session, policy.id),
                "schedule": _schedule(policy),
            },
            user=ctx.user,
        )


@router.get("/policies/{policy_id}/edit")
def policy_edit(request: Request, policy_id: int) -> Response:
    with signed_in(request, MANAGE) as ctx:
        policy = get_policy(ctx.session, policy_id)
        return _form_page(ctx, FormState(values=_values(policy)), policy)


def _changes(policy: Policy, body: PolicyCreate) -> set[str]:
    changed = {name for name in FIELDS if getattr(body, name) != getattr(policy, name)}
    wanted = {(t.server_id, t.database_id) for t in body.targets}
    if wanted != {(t.server_id, t.database_id) for t in policy.targets}:
        changed.add("targets")
    if HAS_RESTORES_NEEDED and sorted(map(str, body.restores_needed)) != sorted(
        map(str, policy.restores_needed or [])
    ):
        changed.add("restores_needed")
    return changed | _notification_changes(policy, body)


@router.post("/policies/{policy_id}/edit")
def policy_update(request: Request, policy_id: int, form: Form) -> Response:
    with signed_in(request, MANAGE, form=form, check_form=True) as ctx:
        policy = get_policy(ctx.session, policy_id)
        state, data = _read_form(form)
        try:
            # The complete form must make a valid policy; only what changed is sent on.
            full = PolicyCreate.model_validate(data)
        except ValidationError as exc:
            apply_validation_error(state, exc, model_field="schedule")
            return _form_page(ctx, state, policy, status_code=422)
        if state.failed:
            return _form_page(ctx, state, policy, status_code=422)
        changed = _changes(policy, full)
        if not changed:
            flash(request, "Nothing changed.", "info")
            return RedirectResponse(f"/policies/{policy.id}", status_code=303)
        body = PolicyUpdate.model_validate({k: v for k, v in data.items() if k in changed})
        try:
            update_policy(policy.id, body, ctx.session, ctx.principal, request)
            ctx.session.flush()
        except Problem as exc:
            ctx.session.rollback()
            apply_problem(state, exc)
            return _form_page(ctx, state, get_policy(ctx.session, policy_id), exc.status)
        flash(request, f"Policy '{policy.name}' saved.")
        return RedirectResponse(f"/policies/{policy.id}", status_code=303)


@router.post("/policies/{policy_id}/toggle")
def policy_toggle(request: Request, policy_id: int, form: Form) -> Response:
    """Enable or disable; htmx swaps the table row, a plain form post goes back to the list."""
    with signed_in(request, MANAGE, form=form, check_form=True) as ctx:
        policy = get_policy(ctx.session, policy_id)
        update_policy(
            policy.id, PolicyUpdate(enabled=not policy.enabled), ctx.session, ctx.principal
        )
        ctx.session.flush()
        if is_htmx(request):
            return render(
                request,
                "partials/policy_row.html",
                {
                    "p": policy,
                    "repositories": names(ctx.session, Connection, [policy.repository_id]),
                    "schedule": _schedule,
                },
                user=ctx.user,
            )
        state = "enabled" if policy.enabled else "disabled"
        flash(request, f"Policy '{policy.name}' {state}.")
        return RedirectResponse("/policies", status_code=303)


@router.post("/policies/{policy_id}/run")
def policy_run(request: Request, policy_id: int, form: Form) -> Response:
    """Back up now, outside the schedule."""
    with signed_in(request, Permission.RUN_BACKUP, form=form, check_form=True) as ctx:
        policy = get_policy(ctx.session, policy_id)
        body = JobCreate(kind=JobKind.BACKUP, policy_id=policy.id)
        return start_job(ctx, body, f"Backup of '{policy.name}' queued.")


def _delete_page(ctx: Ctx, policy: Policy, error: str | None = None, status_code=200):
    return render(
        ctx.request,
        "confirm_delete.html",
        {
            "section": "policies",
            "what": "policy",
            "name": policy.name,
            "action": f"/policies/{policy.id}/delete",
            "cancel": f"/policies/{policy.id}",
            "error": error,
            "consequence": "No new backups are scheduled for it. Its existing restore points stay "
            "in the catalog.",
        },
        user=ctx.user,
        status_code=status_code,
    )


@router.get("/policies/{policy_id}/delete")
def policy_delete_confirm(request: Request, policy_id: int) -> Response:
    with signed_in(request, MANAGE) as ctx:
        return _delete_page(ctx, get_policy(ctx.session, policy_id))


@router.post("/policies/{policy_id}/delete")
def policy_delete(request: Request, policy_id: int, form: Form) -> Response:
    with signed_in(request, MANAGE, form=form, check_form=True) as ctx:
        policy = get_policy(ctx.session, policy_id)
        name = policy.name
        try:
            delete_policy(policy.id, ctx.session, ctx.principal)
            ctx.session.flush()
        except Problem as exc:
            ctx.session.rollback()
            return _delete_page(ctx, get_policy(ctx.session, policy_id), exc.detail, exc.status)
        flash(request, f"Policy '{name}' deleted.")
        return RedirectResponse("/policies", status_code=303)
