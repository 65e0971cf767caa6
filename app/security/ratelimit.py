"""Failed-attempt throttling, per address *and* user, with back-off.

Keyed by the pair, so someone guessing the admin's password from one address locks only
that address out of that account: the real admin, from their own desk, still gets in. An
address that sprays many accounts is held back on its own key (``ADDRESS_FACTOR`` times
the per-pair limit). Past the limit every further failure doubles the wait, up to
``MAX_WAIT_S``; a success clears the pair.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

ADDRESS_FACTOR = 4
MAX_WAIT_S = 3600


class LoginThrottle:
    def __init__(self, max_failures: int, window_s: int):
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _limits(self, username: str, client_ip: str) -> list[tuple[str, int]]:
        return [
            (f"pair:{client_ip}|{username.lower()}", self.max_failures),
            (f"ip:{client_ip}", self.max_failures * ADDRESS_FACTOR),
        ]

    def _prune(self, key: str, now: float) -> deque[float]:
        q = self._failures[key]
        while q and q[0] <= now - max(self.window_s, MAX_WAIT_S):
            q.popleft()
        return q

    def _wait(self, q: deque[float], limit: int, now: float) -> int:
        recent = [t for t in q if t > now - self.window_s]
        waits = [0.0]
        if len(recent) >= limit:  # the plain window: ``limit`` failures in ``window_s``
            waits.append(recent[-limit] + self.window_s - now)
        if len(q) > limit:  # each failure past the limit (within the hour) doubles the wait
            waits.append(q[-1] + min(self.window_s * 2 ** (len(q) - limit), MAX_WAIT_S) - now)
        return max(0, int(max(waits)) + (1 if max(waits) > 0 else 0))

    def retry_after(self, username: str, client_ip: str) -> int:
        """Seconds until another attempt is allowed; 0 when allowed now."""
        now = time.monotonic()
        with self._lock:
            return max(
                self._wait(self._prune(key, now), limit, now)
                for key, limit in self._limits(username, client_ip)
            )

    def failed(self, username: str, client_ip: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key, _ in self._limits(username, client_ip):
                self._prune(key, now).append(now)

    def succeeded(self, username: str, client_ip: str | None = None) -> None:
        with self._lock:
            if client_ip is not None:
                self._failures.pop(f"pair:{client_ip}|{username.lower()}", None)
            else:
                for key in [k for k in self._failures if k.endswith(f"|{username.lower()}")]:
                    self._failures.pop(key, None)
