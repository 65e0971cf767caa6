"""API tokens: high-entropy random strings, shown once, stored as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "bwk_"


def new_token() -> tuple[str, str, str]:
    """Return (token, prefix shown in lists, hash to store)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token[:12], hash_token(token)


def hash_token(token: str) -> str:
    # A plain hash is enough here: the token has 256 bits of entropy, unlike a password.
    return hashlib.sha256(token.encode()).hexdigest()
