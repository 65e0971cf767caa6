"""Browser sessions, bound to one user for good.

The signed cookie holds the user id *and* that user's session epoch, a random value kept on
the user row and compared on every request. Replacing the epoch ends every session of the
user at once (sign-out, a password change, an admin's reset or "end sessions"), and a user
created later under the same id has another epoch, so an old cookie never becomes theirs.
User ids are not reused either (AUTOINCREMENT on SQLite, a sequence on PostgreSQL); the
epoch is what makes that a second line rather than the only one.
"""

from __future__ import annotations

import secrets
from collections.abc import MutableMapping
from typing import Any

USER_KEY = "user_id"
EPOCH_KEY = "epoch"


def new_epoch() -> str:
    return secrets.token_urlsafe(24)


def start(cookie: MutableMapping[str, Any], user) -> None:
    """A fresh session for ``user``: nothing from before (CSRF token included) carries over."""
    cookie.clear()
    cookie[USER_KEY] = user.id
    cookie[EPOCH_KEY] = user.session_epoch


def belongs_to(cookie: MutableMapping[str, Any], user) -> bool:
    presented = cookie.get(EPOCH_KEY)
    return (
        isinstance(presented, str)
        and bool(user.session_epoch)
        and secrets.compare_digest(presented, user.session_epoch)
    )


def end_all(user) -> None:
    """End every session of ``user`` (the caller commits)."""
    user.session_epoch = new_epoch()
