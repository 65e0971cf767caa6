from __future__ import annotations

import pytest

from app.security.secrets import SecretBox, SecretUnreadable


def test_seal_and_open_roundtrip_with_fresh_nonces():
    box = SecretBox(b"root-key")
    a, b = box.seal("hunter2", "connection"), box.seal("hunter2", "connection")
    assert a != b and b"hunter2" not in a
    assert box.open(a, "connection") == "hunter2"


def test_other_key_tampering_or_context_is_refused():
    sealed = SecretBox(b"root-key").seal("hunter2", "connection")
    with pytest.raises(SecretUnreadable, match="BULWARK_SECRET_KEY"):
        SecretBox(b"another-key").open(sealed, "connection")
    with pytest.raises(SecretUnreadable):
        SecretBox(b"root-key").open(sealed, "repository")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SecretUnreadable):
        SecretBox(b"root-key").open(tampered, "connection")
