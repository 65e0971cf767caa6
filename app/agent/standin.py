"""A STAND-IN for Exchange (a Windows guest with Exchange, VSS and eseutil cannot run here).

It is an ESE-like store on this machine, small but with the behaviour the agent depends on:

* a database file of checksummed pages (page 0 is the header: signature, clean/dirty state);
* numbered log files, one generation each, records ``(page, offset, bytes, lsn)`` written
  ahead of the pages they change (write-ahead logging);
* a checkpoint file: the oldest generation whose records may not be in the database file;
* a writer process (``python -m app.agent.standin write``) that keeps writing during a
  backup: it appends records, rolls logs, flushes dirty pages and advances the checkpoint;
* snapshots as VSS makes them: freeze (the store's lock), roll the log so the snapshot holds
  closed logs only, then copy-on-write: the writer preserves a page's old content in every
  open snapshot before overwriting it, and keeps logs a snapshot holds;
* truncation only when told the backup completed (VSS BackupComplete); circular logging
  deletes logs behind the checkpoint by itself, which breaks any incremental chain;
* soft recovery (eseutil /r): replay records whose lsn is newer than the page's;
* DAG copies: a database may have passive copies on other stand-in servers, fed by
  ``replicate`` (log shipping and replay), with copy and replay queues.

Layout of a server root::

    server.json                      {"name": ..., "dag": <dag root> | null}
    <DB>/db.json                     name, guid, signature, page/log size, circular, mounted
    <DB>/<DB>.edb                    pages
    <DB>/logs/E00XXXXXXXX.log        one generation each (hex)
    <DB>/E00.chk                     checkpoint
    <DB>/state.json                  writer state (current generation, next lsn)
    <DB>/snapshots/<id>/             snapshot.json, pages.idx, pages.bin (preserved pages)
    <DB>/lock                        the freeze lock (fcntl)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import random
import secrets
import shutil
import signal
import struct
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from app.agent.exchange import (
    CheckFailed,
    DatabaseCopy,
    DatabaseInfo,
    ExchangeError,
    Snapshot,
    SnapshotFile,
    Truncation,
)

PAGE_SIZE = 32 * 1024
LOG_SIZE = 1024 * 1024
PAGE_HEADER = struct.Struct("<QQI12x")  # page number, lsn, crc32 of the rest
LOG_MAGIC = b"BWSTANDIN-LOG-1\0"
LOG_HEADER = struct.Struct("<16sI16sII")  # magic, generation, signature, records, crc32
LOG_HEADER_SIZE = 4096
RECORD = struct.Struct("<IHHQ")  # page, offset, length, lsn
RECORD_DATA = 256


def lsn_of(generation: int, seq: int) -> int:
    return (generation << 32) | seq


def log_name(generation: int) -> str:
    return f"E00{generation:08X}.log"


def page_crc(page: bytes | bytearray | memoryview) -> int:
    mv = memoryview(page)
    return zlib.crc32(mv[PAGE_HEADER.size :], zlib.crc32(mv[:16]))


def seal_page(page: bytearray, number: int, lsn: int) -> None:
    struct.pack_into("<QQ", page, 0, number, lsn)
    struct.pack_into("<I", page, 16, page_crc(page))


def page_header(page: bytes | bytearray) -> tuple[int, int, int]:
    return PAGE_HEADER.unpack_from(page, 0)


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


class Store:
    """One stand-in database's files (any copy: active, passive, or restored)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta = _json(self.path / "db.json")
        self.name: str = self.meta["name"]
        self.page_size: int = self.meta["page_size"]
        self.log_size: int = self.meta["log_size"]
        self.signature = bytes.fromhex(self.meta["signature"])

    # -- paths -----------------------------------------------------------------------------

    @property
    def edb(self) -> Path:
        return self.path / f"{self.name}.edb"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def chk(self) -> Path:
        return self.path / "E00.chk"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with open(self.path / "lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def save_meta(self) -> None:
        _write_json(self.path / "db.json", self.meta)

    def generations(self) -> list[int]:
        if not self.logs.exists():
            return []
        return sorted(
            int(p.name[3:11], 16)
            for p in self.logs.iterdir()
            if p.name.startswith("E00") and p.name.endswith(".log")
        )

    def checkpoint(self) -> int:
        doc = _json(self.chk)
        body = json.dumps({k: doc[k] for k in ("generation", "signature")}, sort_keys=True)
        if zlib.crc32(body.encode()) != doc.get("crc"):
            raise CheckFailed("the checkpoint file is damaged", {"checkpoint": str(self.chk)})
        return int(doc["generation"])

    def write_checkpoint(self, generation: int) -> None:
        body = {"generation": generation, "signature": self.signature.hex()}
        doc = dict(body, crc=zlib.crc32(json.dumps(body, sort_keys=True).encode()))
        _write_json(self.chk, doc)

    def state(self) -> dict[str, Any]:
        return _json(self.path / "state.json")

    def save_state(self, state: dict[str, Any]) -> None:
        _write_json(self.path / "state.json", state)

    # -- logs -------------------------------------------------------------------------------

    def new_log(self, generation: int) -> None:
        header = LOG_HEADER.pack(LOG_MAGIC, generation, self.signature, 0, 0)
        with open(self.logs / log_name(generation), "wb") as fh:
            fh.write(header.ljust(LOG_HEADER_SIZE, b"\0"))

    def close_log(self, generation: int, records: int) -> None:
        """Seal a log: record count and checksum in its header, padded to the log size."""
        path = self.logs / log_name(generation)
        with open(path, "r+b") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() < self.log_size:
                fh.truncate(self.log_size)
            fh.seek(LOG_HEADER_SIZE)
            crc = zlib.crc32(fh.read())
            fh.seek(0)
            fh.write(LOG_HEADER.pack(LOG_MAGIC, generation, self.signature, records, crc))

    def read_log(self, path: Path, generation: int | None = None) -> list[tuple]:
        """The records of a closed log; CheckFailed naming the generation when damaged."""
        data = path.read_bytes()
        gen = generation
        if len(data) < LOG_HEADER_SIZE:
            raise CheckFailed(f"log generation {gen} is truncated", {"generation": gen})
        magic, g, sig, count, crc = LOG_HEADER.unpack_from(data, 0)
        if magic != LOG_MAGIC:
            raise CheckFailed(f"log generation {gen} is not a log file", {"generation": gen})
        if gen is not None and g != gen:
            raise CheckFailed(
                f"log file {path.name} holds generation {g}, not {gen}", {"generation": gen}
            )
        if sig != self.signature:
            raise CheckFailed(f"log generation {g} belongs to another database", {"generation": g})
        if zlib.crc32(data[LOG_HEADER_SIZE:]) != crc:
            raise CheckFailed(
                f"log generation {g} is damaged (checksum mismatch)", {"generation": g}
            )
        records, pos = [], LOG_HEADER_SIZE
        for _ in range(count):
            page, offset, length, lsn = RECORD.unpack_from(data, pos)
            pos += RECORD.size
            records.append((page, offset, data[pos : pos + length], lsn))
            pos += length
        return records

    # -- pages ------------------------------------------------------------------------------

    def page_count(self) -> int:
        return self.edb.stat().st_size // self.page_size

    def header(self) -> dict[str, Any]:
        with open(self.edb, "rb") as fh:
            page = fh.read(self.page_size)
        length = struct.unpack_from("<I", page, PAGE_HEADER.size)[0]
        return json.loads(page[PAGE_HEADER.size + 4 : PAGE_HEADER.size + 4 + length])

    def write_header(self, fh: BinaryIO, doc: dict[str, Any]) -> None:
        page = bytearray(self.page_size)
        body = json.dumps(doc).encode()
        struct.pack_into("<I", page, PAGE_HEADER.size, len(body))
        page[PAGE_HEADER.size + 4 : PAGE_HEADER.size + 4 + len(body)] = body
        seal_page(page, 0, 0)
        fh.seek(0)
        fh.write(page)

    def state_digest(self) -> str:
        """The replayed state: a hash of every data page (the header page left out)."""
        import hashlib

        h = hashlib.blake2b(digest_size=16)
        with open(self.edb, "rb") as fh:
            fh.seek(self.page_size)
            while chunk := fh.read(256 * self.page_size):
                h.update(chunk)
        return h.hexdigest()


# -- creating a stand-in server and database -------------------------------------------------


def create_server(root: Path, name: str, dag: Path | None = None) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / "server.json", {"name": name, "dag": str(dag) if dag else None})
    if dag is not None:
        Path(dag).mkdir(parents=True, exist_ok=True)
        members = Path(dag) / "dag.json"
        doc = _json(members) if members.exists() else {"name": Path(dag).name, "members": {}}
        doc["members"][name] = str(root)
        _write_json(members, doc)
    return root


def create_database(
    root: Path,
    name: str,
    *,
    pages: int,
    page_size: int = PAGE_SIZE,
    log_size: int = LOG_SIZE,
    seed: int = 1,
    circular_logging: bool = False,
) -> Store:
    """A new database of ``pages`` pages (deterministic content from ``seed``), mounted,
    with log generation 1 open and the checkpoint at 1."""
    path = Path(root) / name
    (path / "logs").mkdir(parents=True)
    (path / "snapshots").mkdir()
    meta = {
        "name": name,
        "guid": secrets.token_hex(16),
        "signature": secrets.token_hex(16),
        "page_size": page_size,
        "log_size": log_size,
        "circular_logging": circular_logging,
        "mounted": True,
        "recovery": False,
        "active": True,
    }
    _write_json(path / "db.json", meta)
    store = Store(path)
    rng = random.Random(seed)
    with open(store.edb, "wb") as fh:
        header = {k: meta[k] for k in ("name", "guid", "signature", "page_size", "log_size")}
        store.write_header(fh, dict(header, state="dirty"))
        batch = bytearray()
        for number in range(1, pages):
            page = bytearray(PAGE_HEADER.size) + bytearray(rng.randbytes(page_size - 32))
            seal_page(page, number, 0)
            batch += page
            if len(batch) >= 64 * 1024 * 1024:
                fh.write(batch)
                batch = bytearray()
        fh.write(batch)
    store.new_log(1)
    store.write_checkpoint(1)
    store.save_state({"generation": 1, "seq": 0, "records": 0, "offset": LOG_HEADER_SIZE})
    return store


def fill_logs(store: Store, count: int, *, seed: int = 5, record_bytes: int = 4000) -> None:
    """Write ``count`` closed logs of large records at once (benchmarks: a writer making a
    gigabyte of logs record by record would take far longer than the backup measured)."""
    rng = random.Random(seed)
    pages = store.page_count()
    with store.locked():
        state = store.state()
        for _ in range(count):
            gen = state["generation"]
            body = bytearray()
            while len(body) + RECORD.size + record_bytes <= store.log_size - LOG_HEADER_SIZE:
                state["seq"] += 1
                offset = rng.randrange(PAGE_HEADER.size, store.page_size - record_bytes)
                body += RECORD.pack(
                    rng.randrange(1, pages), offset, record_bytes, lsn_of(gen, state["seq"])
                )
                body += rng.randbytes(record_bytes)
                state["records"] += 1
            with open(store.logs / log_name(gen), "r+b") as fh:
                fh.seek(LOG_HEADER_SIZE)
                fh.write(body)
            roll(store, state)
        store.save_state(state)


# -- the writer: what keeps Exchange busy during a backup ------------------------------------


class Writer:
    """Transactions against a mounted database, as the Information Store makes them."""

    def __init__(self, store: Store, *, seed: int = 7, flush_every: int = 200):
        self.store = store
        self.rng = random.Random(seed)
        self.flush_every = flush_every
        self.dirty: dict[int, bytearray] = {}
        self.since_flush = 0
        self.pages = store.page_count()

    def transactions(self, count: int) -> None:
        with self.store.locked():
            state = self.store.state()
            for _ in range(count):
                self._one(state)
            self.store.save_state(state)

    def _one(self, state: dict[str, Any]) -> None:
        s = self.store
        length = RECORD_DATA
        if state["offset"] + RECORD.size + length > s.log_size:
            self._roll(state)
        page_no = self.rng.randrange(1, self.pages)
        offset = self.rng.randrange(PAGE_HEADER.size, s.page_size - length)
        data = self.rng.randbytes(length)
        state["seq"] += 1
        lsn = lsn_of(state["generation"], state["seq"])
        with open(s.logs / log_name(state["generation"]), "r+b") as fh:
            fh.seek(state["offset"])
            fh.write(RECORD.pack(page_no, offset, length, lsn) + data)
        state["offset"] += RECORD.size + length
        state["records"] += 1
        page = self.dirty.get(page_no)
        if page is None:
            with open(s.edb, "rb") as fh:
                fh.seek(page_no * s.page_size)
                page = bytearray(fh.read(s.page_size))
            self.dirty[page_no] = page
        page[offset : offset + length] = data
        seal_page(page, page_no, lsn)
        self.since_flush += 1
        if self.since_flush >= self.flush_every:
            self.flush(state)

    def _roll(self, state: dict[str, Any]) -> None:
        roll(self.store, state)

    def flush(self, state: dict[str, Any]) -> None:
        """Write dirty pages (preserving old ones for open snapshots), then move the
        checkpoint to the current generation; with circular logging, drop older logs."""
        s = self.store
        snaps = open_snapshots(s)
        with open(s.edb, "r+b") as fh:
            for page_no in sorted(self.dirty):
                for snap in snaps:
                    snap.preserve(fh, page_no)
                fh.seek(page_no * s.page_size)
                fh.write(self.dirty[page_no])
        self.dirty.clear()
        self.since_flush = 0
        s.write_checkpoint(state["generation"])
        if s.meta.get("circular_logging") or _json(s.path / "db.json").get("circular_logging"):
            held = {g for snap in snaps for g in range(snap.lo, snap.hi + 1)}
            for gen in s.generations():
                if gen < state["generation"] and gen not in held:
                    with contextlib.suppress(FileNotFoundError):
                        (s.logs / log_name(gen)).unlink()


def roll(store: Store, state: dict[str, Any]) -> None:
    """Close the current log and open the next generation (under the store's lock)."""
    store.close_log(state["generation"], state["records"])
    state["generation"] += 1
    state["seq"] = 0
    state["records"] = 0
    state["offset"] = LOG_HEADER_SIZE
    store.new_log(state["generation"])


class _OpenSnapshot:
    def __init__(self, path: Path):
        self.path = path
        doc = _json(path / "snapshot.json")
        self.pages = doc["pages"]
        self.lo, self.hi = doc["log_range"]
        idx = path / "pages.idx"
        raw = idx.read_bytes() if idx.exists() else b""
        self.preserved = set(struct.unpack(f"<{len(raw) // 4}I", raw))

    def preserve(self, edb: BinaryIO, page_no: int) -> None:
        if page_no >= self.pages or page_no in self.preserved:
            return
        size = _json(self.path / "snapshot.json")["page_size"]
        edb.seek(page_no * size)
        old = edb.read(size)
        with open(self.path / "pages.bin", "ab") as fh:
            fh.write(old)
        # The index names the page only once its old content is there (readers trust it).
        with open(self.path / "pages.idx", "ab") as fh:
            fh.write(struct.pack("<I", page_no))
        self.preserved.add(page_no)


def open_snapshots(store: Store) -> list[_OpenSnapshot]:
    snaps = store.path / "snapshots"
    if not snaps.exists():
        return []
    return [_OpenSnapshot(p) for p in sorted(snaps.iterdir()) if (p / "snapshot.json").exists()]


class _SnapshotReader:
    """The database file as it was at the snapshot: preserved pages over the live file.

    A page read from the live file is checked against the preserved index afterwards: the
    writer preserves before it overwrites, so a page it overwrote during our read is found
    preserved by then."""

    def __init__(self, store: Store, snap_dir: Path, size: int):
        self.store, self.dir, self.size = store, snap_dir, size
        self.pos = 0
        self.fh = open(store.edb, "rb")  # noqa: SIM115 - closed by close()
        self.page_size = store.page_size

    def _preserved(self) -> dict[int, int]:
        raw = (self.dir / "pages.idx").read_bytes() if (self.dir / "pages.idx").exists() else b""
        return {p: i for i, p in enumerate(struct.unpack(f"<{len(raw) // 4}I", raw))}

    def seek(self, pos: int) -> None:
        self.pos = pos

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self.size - self.pos
        n = min(n, self.size - self.pos)
        if n <= 0:
            return b""
        ps = self.page_size
        self.fh.seek(self.pos)
        data = bytearray(self.fh.read(n))
        first, last = self.pos // ps, (self.pos + len(data) - 1) // ps
        preserved = self._preserved()
        hits = [p for p in range(first, last + 1) if p in preserved]
        if hits:
            with open(self.dir / "pages.bin", "rb") as old:
                for p in hits:
                    old.seek(preserved[p] * ps)
                    page = old.read(ps)
                    lo = max(p * ps, self.pos)
                    hi = min((p + 1) * ps, self.pos + len(data))
                    data[lo - self.pos : hi - self.pos] = page[lo - p * ps : hi - p * ps]
        self.pos += len(data)
        return bytes(data)

    def close(self) -> None:
        self.fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- the Exchange interface over stand-in servers ----------------------------------------------


class StandInExchange:
    """The agent's Exchange interface over a stand-in server root (see the module doc)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.server = _json(self.root / "server.json")

    # -- inventory --------------------------------------------------------------------------

    def _store(self, database: str) -> Store:
        path = self.root / database
        if not (path / "db.json").exists():
            raise ExchangeError(f"there is no database {database!r} on {self.server['name']}")
        return Store(path)

    def _dag(self) -> dict[str, Any] | None:
        dag = self.server.get("dag")
        if not dag or not (Path(dag) / "dag.json").exists():
            return None
        return _json(Path(dag) / "dag.json")

    def databases(self) -> list[DatabaseInfo]:
        result = []
        dag = self._dag()
        for path in sorted(self.root.iterdir()):
            if not (path / "db.json").exists():
                continue
            store = Store(path)
            gens = store.generations()
            usage = shutil.disk_usage(store.logs)
            copies = []
            if dag:
                for member, member_root in sorted(dag["members"].items()):
                    other = Path(member_root) / store.name
                    if not (other / "db.json").exists():
                        continue
                    copy = Store(other)
                    copies.append(
                        DatabaseCopy(
                            server=member,
                            active=bool(copy.meta.get("active")),
                            healthy=not copy.meta.get("failed", False),
                            copy_queue=_copy_queue(self._active_of(dag, store.name), copy),
                            replay_queue=_replay_queue(copy),
                        )
                    )
            result.append(
                DatabaseInfo(
                    name=store.name,
                    guid=store.meta["guid"],
                    mounted=bool(store.meta.get("mounted")),
                    circular_logging=bool(store.meta.get("circular_logging")),
                    log_generations=(gens[0], gens[-1]) if gens else None,
                    log_disk_free=usage.free,
                    log_disk_total=usage.total,
                    copies=copies,
                    dag=dag["name"] if dag else None,
                )
            )
        return result

    def _active_of(self, dag: dict[str, Any], database: str) -> Store | None:
        for member_root in dag["members"].values():
            p = Path(member_root) / database
            if (p / "db.json").exists() and _json(p / "db.json").get("active"):
                return Store(p)
        return None

    # -- backup -----------------------------------------------------------------------------

    def snapshot(self, database: str, *, logs_after: int | None) -> Snapshot:
        store = self._store(database)
        active = bool(store.meta.get("active", True))
        with store.locked():
            full_because = None
            if active:
                # Freeze: the Exchange writer rolls the log so the snapshot has closed logs.
                state = store.state()
                if state["records"]:
                    roll(store, state)
                    store.save_state(state)
            gens = store.generations()
            closed = [g for g in gens if not active or g < store.state()["generation"]]
            if not closed:
                raise ExchangeError(f"{database} has no closed log to back up")
            checkpoint = store.checkpoint()
            meta = _json(store.path / "db.json")
            if logs_after is not None:
                if meta.get("circular_logging"):
                    full_because = "circular logging is on: logs are not kept for an incremental"
                elif closed[0] > logs_after + 1:
                    full_because = (
                        f"logs {logs_after + 1}-{closed[0] - 1} are gone since the last backup "
                        "(truncated by something else)"
                    )
            full = logs_after is None or full_because is not None
            if full:
                # A full holds the logs from the checkpoint on: recovery needs those only.
                wanted = [g for g in closed if g >= checkpoint]
                first = checkpoint
            else:
                wanted = [g for g in closed if g > logs_after]
                first = logs_after + 1
            snap_id = secrets.token_hex(8)
            snap_dir = store.path / "snapshots" / snap_id
            snap_dir.mkdir(parents=True)
            lo, hi = (wanted[0], wanted[-1]) if wanted else (first, first - 1)
            size = store.edb.stat().st_size
            _write_json(
                snap_dir / "snapshot.json",
                {
                    "pages": size // store.page_size,
                    "page_size": store.page_size,
                    "log_range": [lo, hi],
                    "checkpoint": checkpoint,
                    "full": full,
                    "created": time.time(),
                },
            )
            # Logs a snapshot holds are hard-linked into it: truncation or circular logging
            # of the live copy cannot take them from under the backup.
            (snap_dir / "logs").mkdir()
            for g in wanted:
                os.link(store.logs / log_name(g), snap_dir / "logs" / log_name(g))
            shutil.copyfile(store.chk, snap_dir / "E00.chk")
        files = []
        if full:
            files.append(SnapshotFile("database", store.edb.name, size))
        files += [
            SnapshotFile("log", log_name(g), (snap_dir / "logs" / log_name(g)).stat().st_size, g)
            for g in wanted
        ]
        files.append(SnapshotFile("checkpoint", "E00.chk", (snap_dir / "E00.chk").stat().st_size))
        return Snapshot(snap_id, database, files, checkpoint, (lo, hi), full, full_because)

    def _snap_dir(self, snap: Snapshot) -> Path:
        return self._store(snap.database).path / "snapshots" / snap.id

    def open_file(self, snap: Snapshot, name: str) -> BinaryIO:
        store = self._store(snap.database)
        snap_dir = self._snap_dir(snap)
        entry = next((f for f in snap.files if f.name == name), None)
        if entry is None:
            raise ExchangeError(f"{name} is not in snapshot {snap.id}")
        if entry.role == "database":
            return _SnapshotReader(store, snap_dir, entry.size)  # type: ignore[return-value]
        if entry.role == "log":
            return open(snap_dir / "logs" / name, "rb")
        return open(snap_dir / "E00.chk", "rb")

    def check(self, snap: Snapshot, block_size: int | None = None) -> dict[str, Any]:
        """eseutil /k on the snapshot. With ``block_size``, also each block's fingerprint:
        a hash of its pages' (lsn, checksum) pairs. A page's lsn moves with every change, so
        an equal fingerprint means an unchanged block (ESE's own change tracking)."""
        import hashlib

        store = self._store(snap.database)
        fingerprints: list[str] = []
        per_block = (block_size // store.page_size) if block_size else 0
        block = None
        snap_dir = self._snap_dir(snap)
        gens = [f.generation for f in snap.files if f.role == "log"]
        lo, hi = snap.log_range
        for expected, got in zip(range(lo, hi + 1), gens, strict=False):
            if expected != got:
                raise CheckFailed(
                    f"log generation {expected} is missing: the log sequence is broken",
                    {"generation": expected},
                )
        if len(gens) != max(0, hi - lo + 1):
            missing = sorted(set(range(lo, hi + 1)) - set(gens))
            raise CheckFailed(
                f"log generation {missing[0]} is missing: the log sequence is broken",
                {"generation": missing[0]},
            )
        last_lsn = 0
        for g in gens:
            path = snap_dir / "logs" / log_name(g)
            if not path.exists():
                raise CheckFailed(f"log generation {g} is missing", {"generation": g})
            records = store.read_log(path, g)
            if records:
                last_lsn = max(last_lsn, records[-1][3])
        pages = 0
        if snap.full:
            if snap.checkpoint_generation < lo:
                raise CheckFailed(
                    f"log generation {snap.checkpoint_generation} (the checkpoint) is missing: "
                    "the database cannot be recovered from this backup",
                    {"generation": snap.checkpoint_generation},
                )
            limit = lsn_of(hi + 1, 0)
            entry = next(f for f in snap.files if f.role == "database")
            with self.open_file(snap, entry.name) as fh:  # type: ignore[attr-defined]
                number = 0
                while True:
                    batch = fh.read(256 * store.page_size)
                    if not batch:
                        break
                    for off in range(0, len(batch), store.page_size):
                        page = batch[off : off + store.page_size]
                        got_no, lsn, crc = page_header(page)
                        if got_no != number or crc != page_crc(page):
                            raise CheckFailed(
                                f"database page {number} is damaged (checksum mismatch)",
                                {"page": number},
                            )
                        if lsn >= limit:
                            raise CheckFailed(
                                f"database page {number} is newer than the logs backed up",
                                {"page": number},
                            )
                        if per_block:
                            if number % per_block == 0:
                                if block is not None:
                                    fingerprints.append(block.hexdigest())
                                block = hashlib.blake2b(digest_size=16)
                            block.update(page[:20])
                        number += 1
                pages = number
                if block is not None:
                    fingerprints.append(block.hexdigest())
        result: dict[str, Any] = {
            "pages_checked": pages,
            "logs_checked": len(gens),
            "log_range": [lo, hi],
        }
        if per_block and block_size % store.page_size == 0:
            result["block_fingerprints"] = fingerprints
        return result

    def release(self, snap: Snapshot) -> None:
        store = self._store(snap.database)
        with store.locked():
            shutil.rmtree(self._snap_dir(snap), ignore_errors=True)

    def log_state(self, database: str) -> Truncation:
        store = self._store(database)
        gens = store.generations()
        usage = shutil.disk_usage(store.logs)
        span = (gens[0], gens[-1]) if gens else None
        return Truncation(span, span, usage.free, usage.total, False)

    def complete_backup(self, snap: Snapshot) -> Truncation:
        """BackupComplete: logs older than the snapshot's checkpoint go, on every copy of a
        DAG once each copy has replayed them (Exchange's rule for replicated databases)."""
        store = self._store(snap.database)
        before = self.log_state(snap.database).before
        keep_from = min(snap.checkpoint_generation, snap.log_range[1] + 1)
        stores = [store]
        dag = self._dag()
        if dag:
            stores = [
                Store(Path(r) / snap.database)
                for r in dag["members"].values()
                if (Path(r) / snap.database / "db.json").exists()
            ]
            for other in stores:
                if not other.meta.get("active"):
                    keep_from = min(keep_from, other.meta.get("replayed", 0) + 1)
        removed = 0
        for each in stores:
            with each.locked():
                for g in each.generations():
                    if g < keep_from:
                        (each.logs / log_name(g)).unlink()
                        removed += 1
                each.meta = _json(each.path / "db.json")
                each.meta["last_backup"] = time.time()
                each.save_meta()
        self.release(snap)
        after = self.log_state(snap.database)
        return Truncation(
            before, after.after, after.log_disk_free, after.log_disk_total, removed > 0
        )

    # -- restore ----------------------------------------------------------------------------

    def dismount(self, database: str) -> None:
        store = self._store(database)
        with store.locked():
            store.meta = _json(store.path / "db.json")
            store.meta["mounted"] = False
            store.save_meta()

    def mount(self, database: str) -> None:
        store = self._store(database)
        with store.locked():
            store.meta = _json(store.path / "db.json")
            store.meta["mounted"] = True
            store.save_meta()

    def restore_path(self, database: str, mode: str, path: str | None) -> Path:
        if mode == "original":
            store = self._store(database)
            if store.meta.get("mounted"):
                raise ExchangeError(f"{database} is mounted: dismount it before restoring over it")
            # The current files go: logs newer than the restore point must not be replayed.
            with store.locked():
                for log in store.logs.iterdir():
                    log.unlink()
                store.chk.unlink(missing_ok=True)
            return store.path
        if mode == "recovery":
            target = self.root / (path or f"RDB-{database}")
            if target.exists():
                raise ExchangeError(f"a database already exists at {target}")
            return target
        if not path:
            raise ExchangeError("a restore to another path needs the path")
        target = Path(path)
        if target.exists() and any(target.iterdir()):
            raise ExchangeError(f"{target} is not empty")
        return target

    def recover(self, path: Path, database: str, upto_generation: int | None) -> dict[str, Any]:
        return soft_recovery(Path(path), database, upto_generation)

    def finish_restore(self, database: str, mode: str, path: Path) -> None:
        store = Store(path)
        store.meta["mounted"] = mode in ("original", "recovery")
        store.meta["recovery"] = mode == "recovery"
        store.save_meta()


def _meta_from_header(path: Path, database: str) -> None:
    """A restored folder has the database, its logs and checkpoint; the stand-in's db.json
    (what Exchange keeps in Active Directory) is rebuilt from the database header."""
    edb = next(path.glob("*.edb"))
    with open(edb, "rb") as fh:
        page = fh.read(64 * 1024)
    length = struct.unpack_from("<I", page, PAGE_HEADER.size)[0]
    header = json.loads(page[PAGE_HEADER.size + 4 : PAGE_HEADER.size + 4 + length])
    meta = {
        "name": edb.stem,
        "guid": header["guid"],
        "signature": header["signature"],
        "page_size": header["page_size"],
        "log_size": header["log_size"],
        "circular_logging": False,
        "mounted": False,
        "recovery": False,
        "active": True,
    }
    _write_json(path / "db.json", meta)
    (path / "snapshots").mkdir(exist_ok=True)


def soft_recovery(path: Path, database: str, upto: int | None) -> dict[str, Any]:
    """eseutil /r: replay logs from the checkpoint (up to ``upto``) into the database, then
    check every page and mark the header clean. The restored folder holds db.json, the
    database, logs/ and E00.chk as the agent wrote them."""
    if not (path / "db.json").exists():
        _meta_from_header(path, database)
    store = Store(path)
    header = store.header()
    start = store.checkpoint()
    gens = [g for g in store.generations() if upto is None or g <= upto]
    gens = [g for g in gens if g >= start]
    for want, got in zip(range(start, start + len(gens)), gens, strict=True):
        if want != got:
            raise CheckFailed(
                f"log generation {want} is missing for recovery", {"generation": want}
            )
    applied = 0
    ps = store.page_size
    with open(store.edb, "r+b") as fh:
        for g in gens:
            for page_no, offset, data, lsn in store.read_log(store.logs / log_name(g), g):
                fh.seek(page_no * ps)
                page = bytearray(fh.read(ps))
                if page_header(page)[1] >= lsn:
                    continue
                page[offset : offset + len(data)] = data
                seal_page(page, page_no, lsn)
                fh.seek(page_no * ps)
                fh.write(page)
                applied += 1
        # Logs past ``upto`` are not part of this point in time.
        for g in store.generations():
            if upto is not None and g > upto:
                (store.logs / log_name(g)).unlink()
        count = store.page_count()
        fh.seek(ps)
        for number in range(1, count):
            page = fh.read(ps)
            got_no, _lsn, crc = page_header(page)
            if got_no != number or crc != page_crc(page):
                raise CheckFailed(f"restored page {number} is damaged", {"page": number})
        last = gens[-1] if gens else start - 1
        store.write_header(fh, dict(header, state="clean"))
    store.write_checkpoint(last + 1)
    state = {"generation": last + 1, "seq": 0, "records": 0, "offset": LOG_HEADER_SIZE}
    store.new_log(last + 1)
    store.save_state(state)
    return {
        "replayed_generations": [gens[0], gens[-1]] if gens else None,
        "records_applied": applied,
        "state": "clean",
        "pages": count,
        "state_digest": store.state_digest(),
    }


# -- DAG log shipping ----------------------------------------------------------------------


def _copy_queue(active: Store | None, copy: Store) -> int:
    if active is None or copy.path == active.path:
        return 0
    closed = [g for g in active.generations() if g < active.state()["generation"]]
    have = set(copy.generations())
    return len([g for g in closed if g not in have and g > copy.meta.get("replayed", 0)])


def _replay_queue(copy: Store) -> int:
    if copy.meta.get("active"):
        return 0
    return len([g for g in copy.generations() if g > copy.meta.get("replayed", 0)])


def add_passive_copy(active: Store, root: Path) -> Store:
    """Seed a passive copy of ``active`` on another stand-in server (Add-MailboxDatabaseCopy)."""
    with active.locked():
        target = Path(root) / active.name
        (target / "logs").mkdir(parents=True)
        (target / "snapshots").mkdir()
        shutil.copyfile(active.edb, target / active.edb.name)
        shutil.copyfile(active.chk, target / "E00.chk")
        meta = dict(_json(active.path / "db.json"), active=False, mounted=False)
        meta["replayed"] = active.checkpoint() - 1
        _write_json(target / "db.json", meta)
        _write_json(target / "state.json", active.state())
    return Store(target)


def replicate(active: Store, passive: Store) -> int:
    """Ship closed logs to the passive copy and replay them there; returns logs shipped."""
    with active.locked():
        current = active.state()["generation"]
        closed = [g for g in active.generations() if g < current]
        shipped = 0
        for g in closed:
            dest = passive.logs / log_name(g)
            if not dest.exists() and g > passive.meta.get("replayed", 0):
                shutil.copyfile(active.logs / log_name(g), dest)
                shipped += 1
    with passive.locked():
        ps = passive.page_size
        replayed = passive.meta.get("replayed", 0)
        snaps = open_snapshots(passive)
        with open(passive.edb, "r+b") as fh:
            for g in sorted(passive.generations()):
                if g <= replayed:
                    continue
                for page_no, offset, data, lsn in passive.read_log(passive.logs / log_name(g), g):
                    fh.seek(page_no * ps)
                    page = bytearray(fh.read(ps))
                    if page_header(page)[1] >= lsn:
                        continue
                    page[offset : offset + len(data)] = data
                    seal_page(page, page_no, lsn)
                    for snap in snaps:
                        snap.preserve(fh, page_no)
                    fh.seek(page_no * ps)
                    fh.write(page)
                replayed = g
        passive.meta = _json(passive.path / "db.json")
        passive.meta["replayed"] = replayed
        passive.save_meta()
        passive.write_checkpoint(replayed + 1)
    return shipped


def set_active(dag_root: Path, database: str, server: str) -> None:
    """Move the active copy (a switchover, or the failover a snapshot stun can cause)."""
    dag = _json(Path(dag_root) / "dag.json")
    for member, member_root in dag["members"].items():
        p = Path(member_root) / database
        if (p / "db.json").exists():
            meta = _json(p / "db.json")
            meta["active"] = member == server
            meta["mounted"] = member == server
            _write_json(p / "db.json", meta)


def set_failed(store: Store, failed: bool = True) -> None:
    store.meta = _json(store.path / "db.json")
    store.meta["failed"] = failed
    store.save_meta()


# -- the writer process --------------------------------------------------------------------


def _write_main(args: argparse.Namespace) -> int:
    store = Store(Path(args.root) / args.database)
    writer = Writer(store, seed=args.seed, flush_every=args.flush_every)
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    ready = Path(args.ready) if args.ready else None
    done = 0
    while not stop and (args.count is None or done < args.count):
        n = args.batch if args.count is None else min(args.batch, args.count - done)
        writer.transactions(n)
        done += n
        if ready is not None and not ready.exists():
            ready.write_text(str(os.getpid()))
        if args.pause:
            time.sleep(args.pause)
    with store.locked():
        state = store.state()
        writer.flush(state)
        store.save_state(state)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.agent.standin")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="keep writing transactions into a stand-in database")
    w.add_argument("--root", required=True)
    w.add_argument("--database", required=True)
    w.add_argument("--seed", type=int, default=7)
    w.add_argument("--batch", type=int, default=20)
    w.add_argument("--pause", type=float, default=0.005)
    w.add_argument("--count", type=int, default=None)
    w.add_argument("--flush-every", type=int, default=200)
    w.add_argument("--ready", default=None)
    args = parser.parse_args(argv)
    return _write_main(args)


if __name__ == "__main__":
    sys.exit(main())
