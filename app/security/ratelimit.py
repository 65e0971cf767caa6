"""Failed sign-in throttling: too many failures for one user name or one address lock out."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque


class LoginThrottle:
    def __init__(self, max_failures: int, window_s: int):
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _keys(self, username: str, client_ip: str) -> tuple[str, str]:
        return f"user:{username.lower()}", f"ip:{client_ip}"

    def _prune(self, key: str, now: float) -> deque[float]:
        q = self._failures[key]
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def retry_after(self, username: str, client_ip: str) -> int:
        """Seconds until another attempt is allowed; 0 when allowed now."""
        now = time.monotonic()
        with self._lock:
            waits = []
            for key in self._keys(username, client_ip):
                q = self._prune(key, now)
                if len(q) >= self.max_failures:
                    waits.append(int(q[0] + self.window_s - now) + 1)
            return max(waits, default=0)

    def failed(self, username: str, client_ip: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in self._keys(username, client_ip):
                self._prune(key, now).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{username.lower()}", None)
