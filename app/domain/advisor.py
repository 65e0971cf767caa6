"""The protection advisor: for a database, which methods fit, what each gives, and why not.

It only reads strategy declarations (app.strategies); the rules live there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from app.domain.declarations import Declaration, Quiesce, Reach
from app.domain.protection import Consistency, DatabaseLayout, RestoreCapability

CONSISTENCY_ORDER = list(Consistency)  # best first


@dataclass(frozen=True)
class Option:
    method: str
    title: str
    applies: bool
    reason: str  # why it applies (summary) or why it is ruled out
    consistency: list[dict]  # [{"consistency": ..., "needs": [...]}] best first
    restores: list[str]
    restores_from_primary: list[str]


LAYOUT_WORDS = {
    DatabaseLayout.VMDK: "VMDK",
    DatabaseLayout.RDM_PHYSICAL: "physical-mode RDM",
    DatabaseLayout.RDM_VIRTUAL: "virtual-mode RDM",
}


def log_disk_problem(
    d: Declaration, layout: DatabaseLayout, log_layout: DatabaseLayout | None
) -> str | None:
    """Why a snapshot method cannot take the database's logs with it, or None.

    Exchange needs a database's logs to bring it back to the moment of the backup; a method
    that snapshots disks must reach the log disk's backing as well as the database disk's.
    """
    if not d.snapshots_disks or log_layout is None or log_layout == layout:
        return None
    if log_layout in d.reaches:
        return None
    why = d.ruled_out.get(log_layout, "")
    return (
        f"the logs are on a {LAYOUT_WORDS[log_layout]}, not on a {LAYOUT_WORDS[layout]} like "
        f"the database, and {d.title.lower()} cannot snapshot them with it"
        + (f" ({why})" if why else "")
        + "; move the logs to the database's kind of disk or pick another method"
    )


def _reaches(d: Declaration, layout: DatabaseLayout, log_layout: DatabaseLayout | None):
    """What the method reaches on the database disk and, when apart, on the log disk too."""
    reaches = d.reach_on(layout)
    if d.snapshots_disks and log_layout is not None and log_layout != layout:
        on_logs = {r.consistency: r for r in d.reach_on(log_layout)}
        reaches = tuple(
            Reach(r.consistency, r.needs | on_logs[r.consistency].needs, r.by)
            for r in reaches
            if r.consistency in on_logs
        )
    return reaches


def advise(
    declarations: Iterable[Declaration],
    layout: DatabaseLayout,
    log_layout: DatabaseLayout | None = None,
    unavailable: dict[str, str] | None = None,
) -> list[Option]:
    """``log_layout``: the backing of the database's log disk when it is a disk of its own.
    ``unavailable``: methods that would fit but cannot run here now (no agent enrolled or
    online), with what to do about it."""
    options = []
    unavailable = unavailable or {}
    for d in declarations:
        logs = log_disk_problem(d, layout, log_layout) if layout in d.reaches else None
        if logs is None and layout in d.reaches and d.method.value in unavailable:
            logs = unavailable[d.method.value]
        reaches = sorted(
            _reaches(d, layout, log_layout) if logs is None else (),
            key=lambda r: CONSISTENCY_ORDER.index(r.consistency),
        )
        applies = bool(reaches)
        reason = d.summary if applies else d.ruled_out.get(layout, "not for this layout")
        options.append(
            Option(
                method=d.method.value,
                title=d.title,
                applies=applies,
                reason=logs or reason,
                consistency=[
                    {"consistency": r.consistency.value, "needs": sorted(n.value for n in r.needs)}
                    for r in reaches
                ],
                restores=sorted(c.value for c in d.restores) if applies else [],
                restores_from_primary=sorted(c.value for c in d.restores_from_primary)
                if applies
                else [],
            )
        )
    # Methods that apply first, best consistency first.
    return sorted(options, key=lambda o: (not o.applies, _best_rank(o)))


def _best_rank(option: Option) -> int:
    if not option.consistency:
        return len(CONSISTENCY_ORDER)
    return CONSISTENCY_ORDER.index(Consistency(option.consistency[0]["consistency"]))


@dataclass(frozen=True)
class PolicyRequest:
    """What a policy asks of one target, as the advisor needs it."""

    target: str  # e.g. "EXCH-MBX01/DB02", for messages
    layout: DatabaseLayout | None  # None: the whole server (VM image)
    consistency: Consistency
    has_scripts: bool
    keep_on_primary: int
    restores_needed: frozenset[RestoreCapability]
    log_layout: DatabaseLayout | None = None  # the log disk's, when it is a disk of its own


def policy_problems(declaration: Declaration, request: PolicyRequest) -> list[str]:
    """Everything the policy asks that the method cannot give this target. Empty when fine."""
    d, r = declaration, request
    if r.layout is None:
        if d.scope != "vm":
            return [f"{r.target}: {d.title} protects databases; pick a database as the target"]
        reaches = d.reach_on(DatabaseLayout.VMDK)  # the system disk is a VMDK
    else:
        if r.layout not in d.reaches:
            return [f"{r.target}: {d.ruled_out.get(r.layout, 'not possible for this layout')}"]
        logs = log_disk_problem(d, r.layout, r.log_layout)
        if logs:
            return [f"{r.target}: {logs}"]
        reaches = _reaches(d, r.layout, r.log_layout)
    problems = []
    match = [x for x in reaches if x.consistency == r.consistency]
    if not match:
        possible = ", ".join(x.consistency.value for x in reaches) or "none"
        problems.append(
            f"{r.target}: {d.title} cannot reach {r.consistency.value} consistency here "
            f"(possible: {possible})"
        )
    elif match[0].by == Quiesce.SCRIPTS and not r.has_scripts:
        problems.append(
            f"{r.target}: {r.consistency.value} with {d.title} needs pre- and post-snapshot "
            "scripts that quiesce and resume the database"
        )
    if r.keep_on_primary > 0 and d.no_kept_snapshots:
        problems.append(
            f"{r.target}: {d.title} cannot keep snapshots on primary storage: "
            f"{d.no_kept_snapshots} (set keep_on_primary to 0)"
        )
    available = set(d.restores)
    if r.keep_on_primary > 0:
        available |= d.restores_from_primary
    for wanted in sorted(r.restores_needed - available):
        if wanted in d.restores_from_primary:
            problems.append(
                f"{r.target}: {wanted.value} needs snapshots kept on primary storage "
                "(set keep_on_primary above 0)"
            )
        elif wanted in (RestoreCapability.MAILBOX, RestoreCapability.MESSAGE):
            problems.append(
                f"{r.target}: a database-level backup restores only the whole database, "
                f"never a single {wanted.value}; use mailbox-level backup for that"
            )
        else:
            problems.append(f"{r.target}: {d.title} cannot restore {wanted.value}")
    return problems
