"""Copying images from one repository to another (the engine under 3-2-1 copies).

The target is a *replica*: it is initialised with the source's config (same uuid, block
size and wrapped key), so chunks keep their names (keyed digests) and are copied byte for
byte, sealed as they are, without being opened or encrypted again. Any pair of stores
works: filesystem to S3, S3 to S3, filesystem to filesystem.

Incremental and resumable by the same rule: an object the target already has is not copied
again. The target is listed once per copy (one paged listing instead of a request per
chunk); a copy that was killed left whole objects (every put is atomic), which the next copy
finds there. An image's manifest is written last, after every chunk it names is durable on
the target, so the target never holds a manifest naming a missing chunk; the copy runs
inside the target's ``writing()`` record, so a collection on the target spares what it has
copied so far.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from app.repository.backend import ObjectMissing, ObjectStore
from app.repository.chunks import chunk_key, threads_for
from app.repository.errors import RepositoryError
from app.repository.store import Repository, open_repository_in


@dataclass
class CopyReport:
    images: int = 0
    images_present: int = 0  # already on the target: nothing to do
    chunks_copied: int = 0
    chunks_present: int = 0
    bytes_copied: int = 0
    seconds: float = 0.0
    copied: list[str] = field(default_factory=list)

    @property
    def mib_s(self) -> float:
        return self.bytes_copied / 1048576 / self.seconds if self.seconds else 0.0


def open_replica(
    source: Repository,
    store: ObjectStore,
    *,
    label: str,
    key: bytes | None,
    id=None,
    immutable_days: int | None = None,
) -> Repository:
    """The replica of ``source`` in ``store``: initialised with the source's config when
    the store is empty (immutable or not by its own choice, ``immutable_days``: a copy may
    be locked where its source is not); refused when it holds another repository."""
    try:
        config = json.loads(store.get("config"))
    except ObjectMissing:
        if next(iter(store.list("")), None) is not None:
            raise RepositoryError(f"{label} is not empty and holds no Bulwark repository") from None
        config = {k: v for k, v in source.config.items() if k != "immutability"}
        if immutable_days:
            if not (hasattr(store, "lock_enabled") and store.lock_enabled()):
                raise RepositoryError(
                    f"{label}: an immutable copy needs an S3 bucket created with Object Lock"
                ) from None
            config["immutability"] = {
                "mode": "s3-object-lock-compliance",
                "days": immutable_days,
            }
        store.put("config", json.dumps(config, indent=1).encode())
    else:
        if config.get("uuid") != source.uuid:
            raise RepositoryError(
                f"{label} holds another repository ({config.get('uuid')}); a copy target is "
                f"a replica of its source ({source.uuid})"
            )
    return open_repository_in(store, label=label, key=key, id=id)


def copy_images(
    source: Repository,
    target: Repository,
    manifest_ids: Iterable[str],
    *,
    progress: Callable[[int, float], None] | None = None,
    threads: int | None = None,
) -> CopyReport:
    """Copy the images (and every chunk they name) the target lacks; ``progress`` gets the
    bytes copied so far and the rate in MiB/s."""
    if target.uuid != source.uuid:
        raise RepositoryError("the target is not a replica of the source")
    threads = threads or max(threads_for(source.store), threads_for(target.store))
    report = CopyReport()
    started = time.monotonic()
    have_manifests = set(target.list_manifests())
    have_chunks = {k.rsplit("/", 1)[-1] for k in target.store.list("chunks/")}
    lock = threading.Lock()

    def copy_chunk(digest: str) -> None:
        key = chunk_key(digest)
        data = source.store.get(key)
        target.store.put(key, data, durable=False)
        with lock:
            report.chunks_copied += 1
            report.bytes_copied += len(data)
            have_chunks.add(digest)
            done = report.bytes_copied
        if progress is not None:
            elapsed = time.monotonic() - started
            progress(done, done / 1048576 / elapsed if elapsed else 0.0)

    with target.writing(), ThreadPoolExecutor(threads, thread_name_prefix="repo-copy") as pool:
        for manifest_id in manifest_ids:
            report.images += 1
            if manifest_id in have_manifests:
                report.images_present += 1
                continue
            manifest = source.load_manifest(manifest_id)
            wanted = sorted(manifest.digests())
            missing = [d for d in wanted if d not in have_chunks]
            report.chunks_present += len(wanted) - len(missing)
            for future in [pool.submit(copy_chunk, d) for d in missing]:
                future.result()
            target.store.flush()  # the chunks are durable before the manifest names them
            raw = source.store.get(f"manifests/{manifest_id}")
            # As save_manifest: a collection on the target must not have taken a chunk this
            # copy found there at its start.
            with target.gc_lock(exclusive=False):
                gone = target.missing_chunks(wanted)
                for digest in gone:
                    copy_chunk(digest)
                target.store.flush()
                target.store.put(f"manifests/{manifest_id}", raw)
            have_manifests.add(manifest_id)
            report.copied.append(manifest_id)
    report.seconds = time.monotonic() - started
    return report
