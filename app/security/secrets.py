"""Secrets at rest: connection passwords and keys are sealed with AES-256-GCM.

The key is derived from the root key (``BULWARK_SECRET_KEY``) with HKDF, one derived key per
purpose, so the session-cookie key and the secrets key are never the same bytes.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE = 12
_VERSION = b"\x01"


def derive_key(root_key: bytes, purpose: str, length: int = 32) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=b"bulwark", info=purpose.encode()
    ).derive(root_key)


class SecretUnreadable(Exception):
    """The stored secret does not open with this key (key changed, or data tampered with)."""


class SecretBox:
    def __init__(self, root_key: bytes):
        self._aead = AESGCM(derive_key(root_key, "connection-secrets"))

    def seal(self, plaintext: str, context: str) -> bytes:
        """Encrypt; ``context`` (e.g. ``connection``) is bound as associated data."""
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), context.encode())

    def open(self, sealed: bytes, context: str) -> str:
        if not sealed or sealed[:1] != _VERSION:
            raise SecretUnreadable("unknown secret format")
        nonce, body = sealed[1 : 1 + _NONCE], sealed[1 + _NONCE :]
        try:
            return self._aead.decrypt(nonce, body, context.encode()).decode()
        except InvalidTag as exc:
            raise SecretUnreadable(
                "the stored secret cannot be decrypted: BULWARK_SECRET_KEY changed?"
            ) from exc
