"""Garbage collection: mark every chunk a live image or reference source needs, sweep the rest.

The live set is explicit: every image manifest in the repository, and every digest a source
of the fixed list in references.py yields (the mail archive); collection refuses to run
while one of those sources is missing, rather than sweep what it would have kept.

Safe against a backup writing at the same time, by three rules:

* A chunk is swept only if it is unmarked AND was last written or touched before the
  *cutoff*: the collection's start, or the start of the oldest backup still writing (its
  ``writers/`` record), whichever is earlier, minus a grace period (default 5 min, for
  clocks of other hosts sharing the repository). A backup writes new chunks and touches every
  chunk it reuses (deduplicated, or unchanged under changed-block tracking), so all its
  chunks are younger than the cutoff.
* A manifest a running backup builds on, or a download reads, cannot be deleted
  (``ManifestInUse``).
* The sweep holds the repository's ``gc`` lock exclusively; saving a manifest takes it shared
  and checks that every chunk it names still exists, so a manifest never appears naming a
  chunk the sweep removed.

A backup that crashed leaves only chunks no manifest names and a writer record of a dead
process; the next collection after the grace period removes both's effect. A backup that
failed (a full disk, an error it saw) records the chunks it stored new (``abandoned/``):
the next collection removes them at once, unless a writer that began before the failure is
still running or something touched them since.

Packs (many small chunks in one file, see packs.py) follow the same rules a pack at a time:
one written or touched after the cutoff is kept whole; an older one is removed when none of
its chunks is needed, and written anew with only the needed ones when some are not: mail
past its retention must really leave the repository, not linger beside live mail. A pack
without an index (a crash between the two) is removed after the cutoff; a pack with a torn
index, or shorter than its index, only when nothing it holds is needed and not stored
elsewhere (otherwise it is kept and reported as damaged).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from app.repository.backend import ObjectMissing
from app.repository.errors import RepositoryError
from app.repository.immutable import locked_until
from app.repository.packs import decode_index, index_key, pack_key, remove_pack, write_pack
from app.repository.references import missing_sources, reference_sources
from app.repository.s3 import ObjectLocked
from app.repository.store import Repository

GRACE_S = 300.0


@dataclass
class GcReport:
    images: int = 0
    live_chunks: int = 0
    kept_young: int = 0
    removed_chunks: int = 0
    freed_bytes: int = 0
    remaining_chunks: int = 0
    remaining_bytes: int = 0
    logical_bytes: int = 0
    removed_temporaries: int = 0
    removed_abandoned: int = 0  # chunks of failed writers, removed without the grace
    removed_packs: int = 0
    repacked_packs: int = 0
    # Packs whose index is torn, or that are shorter than their index says, with chunks
    # that may be needed: kept for an operator (verify reports them), never swept.
    damaged_packs: list[str] = field(default_factory=list)
    cutoff: float = 0.0
    sources: dict[str, int] = field(default_factory=dict)
    # Unneeded but still locked (an immutable repository): reclaimable from ``reclaim_at``.
    locked_objects: int = 0
    locked_bytes: int = 0
    reclaim_at: datetime | None = None

    def keep_locked(self, until: datetime, size: int) -> None:
        self.locked_objects += 1
        self.locked_bytes += size
        self.remaining_bytes += size
        if self.reclaim_at is None or until < self.reclaim_at:
            self.reclaim_at = until


def live_digests(
    repo: Repository, session: Session | None, *, images_only: bool = False
) -> tuple[set[str], GcReport]:
    """Every chunk digest a manifest or a registered reference source needs."""
    report = GcReport()
    live: set[str] = set()
    for manifest_id in repo.list_manifests():
        if not repo.store.exists(f"manifests/{manifest_id}"):
            continue  # deleted since it was listed
        # An unreadable manifest stops the collection: sweeping without it could lose data.
        manifest = repo.load_manifest(manifest_id)
        live.update(manifest.digests())
        report.images += 1
        report.logical_bytes += manifest.size
    if not images_only:
        if repo.id is None or session is None:
            raise RepositoryError(
                "collecting garbage needs the repository's connection and a database session "
                "(other things than images keep chunks alive)"
            )
        missing = missing_sources()
        if missing:
            # Sweeping without a source would remove every chunk it keeps alive.
            raise RepositoryError(
                "garbage collection refused: the reference source(s) "
                f"{', '.join(missing)} are not loaded in this process, so what they keep "
                "alive cannot be told apart from garbage"
            )
        for name, source in reference_sources().items():
            before = len(live)
            live.update(source(session, repo.id))
            report.sources[name] = len(live) - before
    report.live_chunks = len(live)
    return live, report


def collect_garbage(
    repo: Repository,
    session: Session | None = None,
    *,
    grace_s: float = GRACE_S,
    images_only: bool = False,
) -> GcReport:
    """Remove unneeded chunks; ``images_only`` ignores reference sources (tools, tests)."""
    started = time.time()
    writers = repo.active_writers(remove_dead=True)
    cutoff = min([started] + [w["started"] for w in writers]) - grace_s
    live, report = live_digests(repo, session, images_only=images_only)
    report.cutoff = cutoff
    # Chunks a failed writer stored (its record says which) go now, not after the grace:
    # unless a writer still running began before that one ended (it may share them), or
    # something touched them after it ended.
    abandoned = repo.writers.abandoned_chunks()
    failed = {
        key: chunks
        for key, (ended, chunks) in abandoned.items()
        if not any(w["started"] <= ended for w in writers)
    }
    doomed = {d: ended for chunks in failed.values() for d, ended in chunks.items()}
    with repo.gc_lock(exclusive=True):
        for info in repo.store.stat_all("chunks/"):
            digest = info.key.rsplit("/", 1)[-1]
            if digest in live:
                report.remaining_chunks += 1
                report.remaining_bytes += info.size
            elif (until := locked_until(repo.store, info.key)) is not None:
                report.keep_locked(until, info.size)  # never tried: the store would refuse
                report.remaining_chunks += 1
            elif digest in doomed and info.modified <= doomed[digest]:
                with contextlib.suppress(ObjectMissing):
                    repo.store.delete(info.key)
                    report.removed_chunks += 1
                    report.freed_bytes += info.size
                    report.removed_abandoned += 1
            elif info.modified >= cutoff:
                report.kept_young += 1
                report.remaining_chunks += 1
                report.remaining_bytes += info.size
            else:
                try:
                    repo.store.delete(info.key)
                    report.removed_chunks += 1
                    report.freed_bytes += info.size
                except ObjectMissing:
                    pass
                except ObjectLocked as exc:  # an older version under the current one is locked
                    report.keep_locked(exc.until or datetime.now(UTC), info.size)
                    report.remaining_chunks += 1
        _collect_packs(repo, live, cutoff, report)
        for key in failed:
            with contextlib.suppress(ObjectMissing):
                repo.store.delete(key)
    remove_temps = getattr(repo.store, "remove_stale_temporaries", None)
    if remove_temps is not None:
        report.removed_temporaries = remove_temps(cutoff)
    return report


def _collect_packs(repo: Repository, live: set[str], cutoff: float, report: GcReport) -> None:
    store = repo.store
    packs = {info.key.rsplit("/", 1)[-1]: info for info in store.stat_all("packs/")}
    indexed: set[str] = set()
    repo.packs.refresh()  # where else each chunk is (an index never names a short pack)
    for key in list(store.list("index/")):
        pack_id = key.removeprefix("index/")
        info = packs.get(pack_id)
        indexed.add(pack_id)
        try:
            entries = decode_index(store.get(key))
        except (ObjectMissing, ValueError):
            entries = None
        index_info = next(iter(store.stat_all(index_key(pack_id))), None)
        old = index_info is not None and index_info.modified < cutoff
        if info is None:
            if old:  # the pack is gone (a crash before it reached the disk): nothing to read
                _remove_pack(store, pack_id, report, 0)
            continue
        short = entries is not None and any(e.offset + e.length > info.size for e in entries)
        if entries is None or short:
            # A torn index, or a pack shorter than its index says. After a crash before the
            # sync nothing names them, or what is named is stored elsewhere too: removed once
            # old. Otherwise (the disk damaged them) never swept: what is left may still be
            # read or rebuilt.
            wanted = [e.digest for e in entries or () if e.digest in live]
            if old and entries is not None and not repo.missing_chunks(wanted):
                if _remove_pack(store, pack_id, report, info.size):
                    report.removed_packs += 1
                    report.freed_bytes += info.size
            else:
                report.damaged_packs.append(pack_id)
                report.remaining_bytes += info.size
            continue
        needed = [e for e in entries if e.digest in live]
        needed_bytes = sum(e.length for e in needed)
        if info.modified >= cutoff or len(needed) == len(entries):
            report.kept_young += len(entries) - len(needed)
            report.remaining_chunks += len(entries)
            report.remaining_bytes += info.size
            continue
        until = locked_until(store, pack_key(pack_id))
        if until is not None:  # neither removed nor repacked before its lock ends
            report.keep_locked(until, info.size)
            report.remaining_chunks += len(entries)
            continue
        if needed:
            chunks = [
                (e.digest, store.get_range(pack_key(pack_id), e.offset, e.length)) for e in needed
            ]
            write_pack(store, chunks)
            report.repacked_packs += 1
            report.remaining_chunks += len(needed)
            report.remaining_bytes += needed_bytes
        remove_pack(store, pack_id)
        repo.packs.forget(pack_id)
        report.removed_packs += 1
        report.removed_chunks += len(entries) - len(needed)
        report.freed_bytes += info.size - needed_bytes
    for pack_id, info in packs.items():
        if (
            pack_id not in indexed
            and info.modified < cutoff
            and not store.exists(index_key(pack_id))
            # a crash between writing a pack and its index
            and _remove_pack(store, pack_id, report, info.size)
        ):
            report.removed_packs += 1
            report.freed_bytes += info.size


def _remove_pack(store, pack_id: str, report: GcReport, size: int) -> bool:
    """Remove a pack and its index unless either is locked (then counted as kept)."""
    until = locked_until(store, pack_key(pack_id)) or locked_until(store, index_key(pack_id))
    if until is not None:
        report.keep_locked(until, size)
        return False
    remove_pack(store, pack_id)
    return True
