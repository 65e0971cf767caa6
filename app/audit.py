"""Writing the audit log. Called in the same transaction as the change it records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.db.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    name: str
    kind: str  # user | token | system
    client_ip: str | None = None


SYSTEM = Actor("system", "system")


def record(
    session: Session,
    actor: Actor,
    action: str,
    object_type: str = "",
    object_id: object = None,
    *,
    outcome: str = "success",
    **detail: Any,
) -> None:
    session.add(
        AuditEvent(
            actor=actor.name,
            actor_kind=actor.kind,
            action=action,
            object_type=object_type,
            object_id=None if object_id is None else str(object_id),
            outcome=outcome,
            client_ip=actor.client_ip,
            detail=detail,
        )
    )
