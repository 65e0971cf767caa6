"""What a client may put in a job's ``params``, per kind.

Jobs also carry parameters that only the service sets: who asked (``requested_by``), the
scheduler's ``scheduled_for``, GC's safety margin (``gc_grace_s``), retry and resource
bookkeeping. Accepted from a client they would let an operator change what the role table
says they cannot (a zero grace period removes GC's protection of in-flight backups), so a
client's params are checked against this list, kind by kind, before any job is made.
"""

from __future__ import annotations

from typing import Any

from app.domain.jobs import JobKind

# Set by the service only; never from a client, whatever the kind.
INTERNAL = frozenset(
    {"requested_by", "scheduled_for", "gc_grace_s", "retry_of", "resources", "state"}
)
# A restore's choices (modes are confirmed by their own module before the job is made).
RESTORE = frozenset(
    {
        "mode",
        "confirm",
        "target",
        "datastore",
        "new_vm_name",
        "power_on",
        "disk_key",
        "host",
        "folder",
        "resource_pool",
        "network",
        # agent restores (app.protection.restores.agent): where, and to which log generation
        "path",
        "upto_generation",
    }
)
CLIENT_PARAMS: dict[JobKind, frozenset[str]] = {
    # ``full``: an agent stream backup taken as a full rather than an incremental.
    JobKind.BACKUP: frozenset({"full"}),
    JobKind.SYNC: frozenset(),
    JobKind.EXPIRE: frozenset(),
    JobKind.COPY: frozenset({"target_repository_id", "restore_point_id"}),
    JobKind.VERIFY: frozenset({"sample", "mailbox_restore_point_id"}),
    JobKind.RESTORE: RESTORE,
}


def client_params_problem(kind: JobKind | str, params: dict[str, Any]) -> str | None:
    """Why a client may not start a ``kind`` job with ``params``, or None."""
    allowed = CLIENT_PARAMS.get(JobKind(kind), frozenset())
    internal = sorted(set(params) & INTERNAL)
    if internal:
        return f"params {', '.join(internal)} are set by the service, not by clients"
    unknown = sorted(set(params) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) or "none"
        return f"a {kind} job takes no params {', '.join(unknown)} (it takes: {takes})"
    sample = params.get("sample")
    if sample is not None and (
        isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 < sample <= 1
    ):
        return "params.sample is the share of blocks to verify, above 0 and at most 1"
    return None
