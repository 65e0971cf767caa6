"""Property: no sequence of mail-style backups (packed chunks, deduplicated, some still
running, some failed), expiries and garbage collections loses a chunk the archive needs
or a running backup has stored or used again; with nothing running, exactly the needed
chunks remain."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from app.repository import open_repository_at, references
from app.repository.gc import collect_garbage

# A small pool of messages, so backups share them (dedup) and expired ones come back.
POOL = [f"Subject: {n}\r\n\r\n".encode() + bytes([n]) * (200 + 40 * n) for n in range(12)]
picks = st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=6)


class PackedMail(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="bulwark-packs-prop-"))
        self.repo = open_repository_at(self.dir / "repo", create=True, id=1)
        self.needed: dict[str, bytes] = {}  # what the archive names (as the database would)
        self.running: list[tuple[object, dict[str, bytes]]] = []
        self._sources = references._sources, references.REQUIRED_SOURCES
        references._sources = {"prop": lambda session, repo_id: set(self.needed)}
        references.REQUIRED_SOURCES = ("prop",)

    def teardown(self):
        references._sources, references.REQUIRED_SOURCES = self._sources
        shutil.rmtree(self.dir, ignore_errors=True)

    def _store(self, indexes: list[int]) -> dict[str, bytes]:
        return {self.repo.put_chunk(POOL[i], durable=False, packed=True): POOL[i] for i in indexes}

    @rule(indexes=picks)
    def backup(self, indexes):
        with self.repo.writing():
            stored = self._store(indexes)
            self.repo.flush()
            self.needed.update(stored)

    @rule(indexes=picks)
    def start_backup(self, indexes):
        writing = self.repo.writing()
        writing.__enter__()
        self.running.append((writing, self._store(indexes)))
        # A batch made durable while the backup goes on (before the database names it).
        self.repo.flush()

    @precondition(lambda self: self.running)
    @rule()
    def finish_backup(self):
        writing, stored = self.running.pop()
        self.needed.update(stored)
        writing.__exit__(None, None, None)

    @rule(indexes=picks)
    def failed_backup(self, indexes):
        try:
            with self.repo.writing():
                self._store(indexes)
                raise OSError("connection lost")
        except OSError:
            pass

    @rule(indexes=picks)
    def expire(self, indexes):
        for i in indexes:
            self.needed.pop(self.repo.digest(POOL[i]), None)

    @rule()
    def collect(self):
        collect_garbage(self.repo, object(), grace_s=0)

    @invariant()
    def needed_and_running_read_back(self):
        other = open_repository_at(self.dir / "repo", id=1)
        for digest, raw in self.needed.items():
            assert other.get_chunk(digest) == raw
        for _writing, stored in self.running:
            for digest, raw in stored.items():
                assert other.get_chunk(digest) == raw

    def check_liveness(self):
        while self.running:
            self.finish_backup()
        collect_garbage(self.repo, object(), grace_s=-60)
        other = open_repository_at(self.dir / "repo", id=1)
        assert {d for d in self.needed if other.has_chunk(d)} == set(self.needed)
        assert other.stored_totals()[0] == len(self.needed)
        assert list(other.store.list("chunks/")) == []


class WithLiveness(PackedMail):
    def teardown(self):
        try:
            self.check_liveness()
        finally:
            super().teardown()


WithLiveness.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPacksNeverLoseNeededChunks = WithLiveness.TestCase
