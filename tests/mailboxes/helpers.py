"""Reading a mailbox's state straight from Dovecot, to compare with what a restore made."""

from __future__ import annotations

import hashlib
from datetime import UTC

from imapclient import IMAPClient

SKIP_FLAGS = {"\\Recent"}


def folder_state(client: IMAPClient, folder: str) -> list[tuple[str, tuple[str, ...], str]]:
    """(sha256 of the message, flags, internal date in UTC) of every message, sorted."""
    exists = client.select_folder(folder, readonly=True)[b"EXISTS"]
    data = client.fetch("1:*", ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]) if exists else {}
    out = []
    for d in data.values():
        flags = tuple(sorted(f.decode() for f in d[b"FLAGS"] if f.decode() not in SKIP_FLAGS))
        when = d[b"INTERNALDATE"]
        out.append(
            (
                hashlib.sha256(d[b"BODY[]"]).hexdigest(),
                flags,
                when.astimezone(UTC).isoformat(),
            )
        )
    return sorted(out)


def mailbox_state(client: IMAPClient, prefix: str = "") -> dict[str, list]:
    """Every selectable folder (optionally under ``prefix``) and its messages."""
    out = {}
    for flags, _delim, name in client.list_folders():
        if b"\\Noselect" in flags:
            continue
        if prefix and not name.startswith(prefix):
            continue
        state = folder_state(client, name)
        if state:
            out[name[len(prefix) :]] = state
    return out


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
