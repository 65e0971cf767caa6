"""Property: no sequence of backups, changed-block backups, unfinished backups, expiries and
garbage collections ever loses a chunk a live image or a running backup needs."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from app.repository import ManifestInUse, open_repository_at
from app.repository.gc import collect_garbage

BS = 4096
# A small pool of block contents, so images share blocks (dedup) and contain zero blocks.
POOL = [bytes(BS)] + [bytes([n]) * (BS // 2) + bytes([n + 1]) * (BS // 2) for n in range(1, 7)]
image_blocks = st.lists(st.integers(0, len(POOL) - 1), min_size=0, max_size=6)


def build(indexes: list[int], tail: int) -> bytes:
    return b"".join(POOL[i] for i in indexes) + POOL[1][:tail]


class RepositoryMachine(RuleBasedStateMachine):
    saved = Bundle("saved")

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="bulwark-prop-"))
        self.repo = open_repository_at(self.dir / "repo", create=True, block_size=BS)
        self.live: dict[str, bytes] = {}  # manifest id -> the image it must read back as
        self.pending: list[tuple[object, bytes]] = []  # written, not yet saved

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def _write(self, image: bytes, previous=None, changed=None):
        return self.repo.write_image(
            io.BytesIO(image), size=len(image), source_info={}, previous=previous, changed=changed
        )

    @rule(target=saved, blocks=image_blocks, tail=st.sampled_from([0, 100]))
    def backup(self, blocks, tail):
        image = build(blocks, tail)
        m = self._write(image)
        self.repo.save_manifest(m)
        self.live[m.id] = image
        return m.id

    @rule(target=saved, base=saved, data=st.data())
    def changed_blocks_backup(self, base, data):
        if base not in self.live:
            return base  # expired meanwhile: nothing to build on
        previous = self.repo.load_manifest(base)
        image = bytearray(self.live[base])
        count = -(-len(image) // BS)
        changed = []
        if count:
            for index in data.draw(st.lists(st.integers(0, count - 1), max_size=3)):
                new = POOL[data.draw(st.integers(0, len(POOL) - 1))]
                end = min(len(image), (index + 1) * BS)
                image[index * BS : end] = new[: end - index * BS]
                changed.append((index * BS, end - index * BS))
        m = self._write(bytes(image), previous, changed)
        self.repo.save_manifest(m)
        self.live[m.id] = bytes(image)
        return m.id

    @rule(blocks=image_blocks)
    def start_backup(self, blocks):
        image = build(blocks, 0)
        self.pending.append((self._write(image), image))

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def finish_backup(self, data):
        m, image = self.pending.pop(data.draw(st.integers(0, len(self.pending) - 1)))
        self.repo.save_manifest(m)  # raises if GC took one of its chunks
        self.live[m.id] = image

    @rule(manifest_id=consumes(saved))
    def expire(self, manifest_id):
        if manifest_id not in self.live:
            return
        try:
            self.repo.delete_manifest(manifest_id)
        except ManifestInUse:
            return
        del self.live[manifest_id]

    @rule()
    def collect(self):
        collect_garbage(self.repo, grace_s=0, images_only=True)

    @invariant()
    def live_images_read_back(self):
        assert sorted(self.live) == self.repo.list_manifests()
        for manifest_id, image in self.live.items():
            m = self.repo.load_manifest(manifest_id)
            assert b"".join(self.repo.read_image(m)) == image
        for m, _image in self.pending:
            assert all(self.repo.has_chunk(d) for d in m.digests())

    def check_liveness(self):
        """With no backup running and no grace, exactly the needed chunks remain."""
        for m, image in self.pending:
            self.repo.save_manifest(m)
            self.live[m.id] = image
        self.pending.clear()
        collect_garbage(self.repo, grace_s=-60, images_only=True)
        needed = set()
        for manifest_id in self.live:
            needed |= self.repo.load_manifest(manifest_id).digests()
        stored = {k.rsplit("/", 1)[-1] for k in self.repo.store.list("chunks/")}
        assert stored == needed


class WithLiveness(RepositoryMachine):
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
TestRepositoryNeverLosesLiveChunks = WithLiveness.TestCase
