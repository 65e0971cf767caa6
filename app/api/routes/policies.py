"""Backup policies."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api import API_PREFIX
from app.api.deps import DbSession, Reader, require, runtime
from app.api.pagination import Page, PageWindow, paginate
from app.api.problems import Problem, conflict, found, invalid
from app.api.routes.servers import log_layouts
from app.api.schemas.policies import PolicyCreate, PolicyOut, PolicyUpdate, TargetIn
from app.audit import record
from app.db.models import Connection, ExchangeDatabase, ExchangeServer, Policy, PolicyTarget
from app.domain.advisor import PolicyRequest, policy_problems
from app.domain.connections import ConnectionKind
from app.domain.protection import ProtectionMethod, RestoreCapability
from app.security import settings as security_settings
from app.security.roles import Permission
from app.security.settings import webhook_refusal
from app.strategies import DECLARATIONS

router = APIRouter(prefix=API_PREFIX + "/policies", tags=["policies"])
Manager = require(Permission.MANAGE_PROTECTION)
SORTABLE = {
    "name": Policy.name,
    "method": Policy.method,
    "enabled": Policy.enabled,
    "created_at": Policy.created_at,
}


def get_policy(session: Session, policy_id: int) -> Policy:
    return found(session.get(Policy, policy_id), "policy", policy_id)


def _check_repository(session: Session, repository_id: int | None) -> None:
    if repository_id is None:
        return
    conn = session.get(Connection, repository_id)
    if conn is None or conn.kind != ConnectionKind.REPOSITORY:
        raise invalid(f"connection {repository_id} is not a repository", "repository_id")


def _targets(session: Session, targets: list[TargetIn]) -> list[PolicyTarget]:
    server_ids = {t.server_id for t in targets}
    servers = {
        s.id: s
        for s in session.scalars(select(ExchangeServer).where(ExchangeServer.id.in_(server_ids)))
    }
    db_ids = {t.database_id for t in targets if t.database_id is not None}
    databases = {
        d.id: d
        for d in session.scalars(select(ExchangeDatabase).where(ExchangeDatabase.id.in_(db_ids)))
    }
    seen, rows = set(), []
    for t in targets:
        if t.server_id not in servers:
            raise invalid(f"Exchange server {t.server_id} does not exist", "targets")
        if t.database_id is not None:
            db = databases.get(t.database_id)
            if db is None or db.server_id != t.server_id:
                raise invalid(f"database {t.database_id} is not on server {t.server_id}", "targets")
        key = (t.server_id, t.database_id)
        if key in seen:
            raise invalid(f"target {key} is listed twice", "targets")
        seen.add(key)
        rows.append(PolicyTarget(server_id=t.server_id, database_id=t.database_id))
    return rows


def _check_fits_targets(session: Session, policy: Policy, targets: list[PolicyTarget]) -> None:
    """Refuse what a target's layout cannot give with this method (the advisor's rules)."""
    declaration = DECLARATIONS[policy.method]
    servers = {
        s.id: s
        for s in session.scalars(
            select(ExchangeServer).where(ExchangeServer.id.in_({t.server_id for t in targets}))
        )
    }
    databases = {
        d.id: d
        for d in session.scalars(
            select(ExchangeDatabase).where(
                ExchangeDatabase.id.in_({t.database_id for t in targets if t.database_id})
            )
        )
    }
    logs = log_layouts(session, databases)
    problems = []
    for t in targets:
        db = databases.get(t.database_id) if t.database_id else None
        name = servers[t.server_id].name + (f"/{db.name}" if db else "")
        problems += policy_problems(
            declaration,
            PolicyRequest(
                target=name,
                layout=db.layout if db else None,
                consistency=policy.consistency,
                has_scripts=bool(policy.pre_script and policy.post_script),
                keep_on_primary=policy.keep_on_primary,
                restores_needed=frozenset(RestoreCapability(c) for c in policy.restores_needed),
                log_layout=logs.get(db.id) if db else None,
            ),
        )
    if problems:
        raise Problem(
            422,
            "; ".join(problems),
            type_="/problems/protection-not-possible",
            title="The policy asks for protection the layout cannot give",
            problems=problems,
        )


def _columns(values: dict) -> dict:
    if values.get("notify_webhook_url") is not None:
        values["notify_webhook_url"] = str(values["notify_webhook_url"])
    return values


def _check_webhook(session: Session, url: str | None) -> None:
    if url is None:
        return
    refusal = webhook_refusal(url, security_settings.load(session).webhook_allowed_networks)
    if refusal:
        raise invalid(refusal, "notify_webhook_url")


def _seal_webhook_secret(policy: Policy, body, request: Request | None) -> None:
    if body.notify_webhook_secret is not None:
        if request is None:  # a direct caller (the dashboard) must pass the request
            raise RuntimeError("sealing a webhook secret needs the request")
        policy.notify_webhook_secret_ciphertext = runtime(request).secrets.seal(
            body.notify_webhook_secret.get_secret_value(), "webhook"
        )


def _check_schedule(policy: Policy) -> None:
    if (policy.schedule_cron is None) == (policy.rpo_minutes is None):
        raise invalid("give exactly one of schedule_cron or rpo_minutes", "schedule_cron")


def _check_repository_needed(policy: Policy) -> None:
    # Mailbox and image backups land in a repository; snapshots alone may stay on primary.
    if (
        policy.method
        in (ProtectionMethod.MAILBOX, ProtectionMethod.VM_IMAGE, ProtectionMethod.AGENT_STREAM)
        and policy.repository_id is None
    ):
        raise invalid(f"a {policy.method} policy needs a repository", "repository_id")


@router.get("", response_model=Page[PolicyOut], summary="List policies")
def list_policies(
    session: DbSession,
    _: Reader,
    method: ProtectionMethod | None = None,
    enabled: bool | None = None,
    server_id: int | None = Query(default=None, description="Policies covering this server"),
    q: str | None = Query(default=None, max_length=64, description="Name contains"),
    sort: str | None = Query(default=None, description="name, method, enabled, created_at"),
    window: PageWindow = Depends(),
):
    query = select(Policy)
    if method:
        query = query.where(Policy.method == method)
    if enabled is not None:
        query = query.where(Policy.enabled == enabled)
    if server_id is not None:
        query = query.where(Policy.targets.any(PolicyTarget.server_id == server_id))
    if q:
        query = query.where(Policy.name.contains(q, autoescape=True))
    return paginate(session, query, window, sort, sortable=SORTABLE, default_sort="name")


@router.post("", response_model=PolicyOut, status_code=201, summary="Create a policy")
def create_policy(
    body: PolicyCreate, session: DbSession, principal=Manager, request: Request = None
):
    if session.scalar(select(Policy.id).where(Policy.name == body.name)):
        raise conflict(f"a policy named '{body.name}' already exists")
    _check_repository(session, body.repository_id)
    policy = Policy(**_columns(body.model_dump(exclude={"targets", "notify_webhook_secret"})))
    _check_webhook(session, policy.notify_webhook_url)
    _seal_webhook_secret(policy, body, request)
    _check_repository_needed(policy)
    policy.targets = _targets(session, body.targets)
    _check_fits_targets(session, policy, policy.targets)
    session.add(policy)
    session.flush()
    record(
        session,
        principal.actor,
        "policy.create",
        "policy",
        policy.id,
        name=policy.name,
        method=policy.method,
        targets=len(policy.targets),
    )
    return policy


@router.get("/{policy_id}", response_model=PolicyOut, summary="Read a policy")
def read_policy(policy_id: int, session: DbSession, _: Reader):
    return get_policy(session, policy_id)


@router.patch("/{policy_id}", response_model=PolicyOut, summary="Change a policy")
def update_policy(
    policy_id: int,
    body: PolicyUpdate,
    session: DbSession,
    principal=Manager,
    request: Request = None,
):
    policy = get_policy(session, policy_id)
    changes = _columns(
        body.model_dump(exclude_unset=True, exclude={"targets", "notify_webhook_secret"})
    )
    _seal_webhook_secret(policy, body, request)
    if (
        "name" in changes
        and changes["name"] != policy.name
        and session.scalar(select(Policy.id).where(Policy.name == changes["name"]))
    ):
        raise conflict(f"a policy named '{changes['name']}' already exists")
    if "repository_id" in changes:
        _check_repository(session, changes["repository_id"])
    if changes.get("notify_webhook_url") not in (None, policy.notify_webhook_url):
        _check_webhook(session, changes["notify_webhook_url"])
    for field, value in changes.items():
        setattr(policy, field, value)
    _check_schedule(policy)
    _check_repository_needed(policy)
    fields = sorted(changes)
    new_targets = None if body.targets is None else _targets(session, body.targets)
    _check_fits_targets(
        session, policy, new_targets if new_targets is not None else list(policy.targets)
    )
    if new_targets is not None:
        # Delete the old rows first: the unit of work would insert before it deletes.
        policy.targets.clear()
        session.flush()
        policy.targets = new_targets
        fields.append("targets")
    record(session, principal.actor, "policy.update", "policy", policy.id, fields=fields)
    return policy


@router.delete("/{policy_id}", status_code=204, summary="Delete a policy")
def delete_policy(policy_id: int, session: DbSession, principal=Manager):
    policy = get_policy(session, policy_id)
    session.delete(policy)
    record(session, principal.actor, "policy.delete", "policy", policy_id, name=policy.name)
    return Response(status_code=204)
