"""The restore modes, as registered objects that the API and the restore job both read.

A restore job names its mode in ``params["mode"]`` (``revert`` when it names none). Each mode
module registers one :class:`RestoreMode` saying which mode names it serves, which restore
points it applies to, how a request is checked before it is queued, what a worker needs to
run it, how it runs and how it cleans up after an interrupted run, in the spirit of Velero's
restore item actions (``AppliesTo`` then ``Execute``). The API asks :func:`find` which mode
takes a request and calls its ``confirm``; the restore job asks :func:`find` again and calls
its ``run``; the job's cleanup offers the leftovers to every mode.

To add a mode: write its module in app/protection/restores/, call :func:`register` at its
end, and import it in app/protection/restores/__init__.py. No two modes may take the same
request: a name another mode serves is fine only for points the other does not apply to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.audit import Actor, record

if TYPE_CHECKING:
    from app.db.models import RestorePoint
    from app.jobs.context import JobContext, JobResult

DEFAULT = "revert"


@dataclass(frozen=True)
class RestoreMode:
    # The values of params["mode"] this mode serves (one module may serve several).
    names: tuple[str, ...]
    # Does it take restore points like this one? None: a job without a catalog restore point.
    applies_to: Callable[[RestorePoint | None], bool]
    # Worker capabilities the job needs (see app.jobs.handlers).
    capabilities: tuple[str, ...]
    run: Callable[[JobContext], JobResult]
    # Check a request before it is queued; raises RestoreRefused. ``(point, server name,
    # params)``. None: the mode is queued by an endpoint of its own, not by POST /jobs.
    confirm: Callable[[RestorePoint, str, dict[str, Any]], None] | None = None
    # Undo what an interrupted run left (it takes only the leftovers whose kind it knows).
    cleanup: Callable[[JobContext, list[dict[str, Any]]], None] | None = None


_MODES: list[RestoreMode] = []


def requester(params: dict[str, Any]) -> Actor:
    """Who asked for the restore: the audit names them, not the worker that ran it."""
    return Actor(params.get("requested_by", "system"), "user")


def audit(ctx: JobContext, action: str, object_type: str, object_id: Any, **detail: Any) -> None:
    """Record a restore done, as the operator who asked for it, with the job that did it."""
    with ctx.db.session() as session:
        who = requester(ctx.params)
        record(session, who, action, object_type, object_id, job=ctx.job_id, **detail)


def register(mode: RestoreMode) -> RestoreMode:
    _MODES.append(mode)
    return mode


def vm_point(point: RestorePoint | None) -> bool:
    """A point of a VM-level method (or none found: the mode's run says it is gone)."""
    from app.domain.protection import ProtectionMethod

    return point is None or point.method in (
        ProtectionMethod.VMFS_SNAPSHOT,
        ProtectionMethod.VM_IMAGE,
    )


def modes() -> tuple[RestoreMode, ...]:
    return tuple(_MODES)


def mode_name(params: dict[str, Any]) -> str:
    return str(params.get("mode") or DEFAULT)


def find(point: RestorePoint | None, params: dict[str, Any]) -> RestoreMode | None:
    """The mode that takes a request for ``point`` (None when it names no catalog point)."""
    name = mode_name(params)
    return next((m for m in _MODES if name in m.names and m.applies_to(point)), None)


def offered(point: RestorePoint | None) -> list[str]:
    """The mode names POST /jobs takes for ``point``, for the refusal that lists them."""
    return [n for m in _MODES if m.confirm is not None and m.applies_to(point) for n in m.names]
