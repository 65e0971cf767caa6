"""What the agent and the service agree on: paths, the credential's shape, task states.

Imported by both sides, so it imports nothing of either.
"""

from __future__ import annotations

PREFIX = "/api/v1/agent"
CREDENTIAL_PREFIX = "bwa_"
# The agent says it is alive this often; the service calls it offline after OFFLINE_AFTER_S.
HEARTBEAT_S = 15
OFFLINE_AFTER_S = 60
# A long poll for work is answered after at most this long (empty: 204).
POLL_WAIT_S = 20
# Chunks asked about, and sent, per round trip: bounds the agent's memory to a few blocks.
BATCH_BLOCKS = 8

QUEUED, RUNNING, COPIED, DURABLE, DONE, FAILED, CANCELLED = (
    "queued",
    "running",
    "copied",
    "durable",
    "done",
    "failed",
    "cancelled",
)
FINISHED = (DONE, FAILED, CANCELLED)
