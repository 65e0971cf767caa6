"""Garbage collection: mark every chunk a live image or reference source needs, sweep the rest.

Safe against a backup writing at the same time, by three rules:

* A chunk is swept only if it is unmarked AND was last written or touched before the
  *cutoff*: the collection's start, or the start of the oldest backup still writing (its
  ``writers/`` record), whichever is earlier, minus a grace period (default 5 min, for
  clocks of other hosts sharing the repository). A backup writes new chunks and touches every
  chunk it reuses (deduplicated, or unchanged under changed-block tracking), so all its
  chunks are younger than the cutoff.
* A manifest a running backup builds on cannot be deleted (``ManifestInUse``).
* The sweep holds the repository's ``gc`` lock exclusively; saving a manifest takes it shared
  and checks that every chunk it names still exists, so a manifest never appears naming a
  chunk the sweep removed.

A backup that crashed leaves only chunks no manifest names and a writer record of a dead
process; the next collection after the grace period removes both's effect.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from app.repository.backend import ObjectMissing
from app.repository.references import reference_sources
from app.repository.store import Repository, RepositoryError

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
    cutoff: float = 0.0
    sources: dict[str, int] = field(default_factory=dict)


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
    with repo.gc_lock(exclusive=True):
        for info in repo.store.stat_all("chunks/"):
            digest = info.key.rsplit("/", 1)[-1]
            if digest in live:
                report.remaining_chunks += 1
                report.remaining_bytes += info.size
            elif info.modified >= cutoff:
                report.kept_young += 1
                report.remaining_chunks += 1
                report.remaining_bytes += info.size
            else:
                with contextlib.suppress(ObjectMissing):
                    repo.store.delete(info.key)
                    report.removed_chunks += 1
                    report.freed_bytes += info.size
    remove_temps = getattr(repo.store, "remove_stale_temporaries", None)
    if remove_temps is not None:
        report.removed_temporaries = remove_temps(cutoff)
    return report
