"""The agent's work loop and the two things it does: back up a database, restore one.

A backup runs snapshot → consistency check → stream the files → wait until the service says
the restore point is durable → complete the backup (Exchange truncates its logs). Anything
else that happens (a failed check, a cancel, a dropped service, this process killed) leaves
the shadow copy released without completing the backup, so the logs stay.

Streaming cuts each group of files (the database; the logs, concatenated in generation order;
the checkpoint) into the repository's blocks, asks which digests the repository lacks a few
blocks at a time, and sends only those: an unchanged database crosses the network once, a
dropped connection is retried and the question asked again, so what arrived is not sent
again, and memory holds a few blocks at most.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import blake3

from app.agent import VERSION
from app.agent.client import AgentClient, AgentHttpError
from app.agent.exchange import CheckFailed, Exchange, ExchangeError, Snapshot
from app.agent.protocol import (
    BATCH_BLOCKS,
    DURABLE,
    FINISHED,
    HEARTBEAT_S,
    POLL_WAIT_S,
    PREFIX,
)

log = logging.getLogger("bulwark.agent")
# Chunks uploaded at once, each on its own connection: the service hashes, compresses and
# writes one chunk per request, so a few in parallel keep its cores busy.
UPLOAD_THREADS = 3


class Cancelled(Exception):  # noqa: N818 - reads as what happened
    pass


def _digester(key_hex: str | None):
    key = bytes.fromhex(key_hex) if key_hex else None
    if key is None:
        return lambda data: blake3.blake3(data).hexdigest()
    return lambda data: blake3.blake3(data, key=key).hexdigest()


class Agent:
    def __init__(self, client: AgentClient, exchange: Exchange, state_dir: Path | None = None):
        self.client = client
        self.exchange = exchange
        # What the last backups saw of each database's blocks (fingerprint -> digest).
        self.state_dir = state_dir
        self.stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        self.hostname = socket.gethostname()

    # -- block memory -----------------------------------------------------------------------

    def _state_file(self, key: str) -> Path | None:
        if self.state_dir is None:
            return None
        import hashlib

        return self.state_dir / f"blocks-{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"

    def known_blocks(self, key: str) -> dict[str, str]:
        path = self._state_file(key)
        try:
            return json.loads(path.read_text()) if path else {}
        except (OSError, ValueError):
            return {}

    def remember_blocks(self, key: str, mapping: dict[str, str]) -> None:
        path = self._state_file(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(mapping))
        os.replace(tmp, path)

    # -- the loop ---------------------------------------------------------------------------

    def heartbeat(self) -> None:
        inventory = {"databases": [d.to_json() for d in self.exchange.databases()]}
        self.client.post(
            PREFIX + "/heartbeat",
            {"version": VERSION, "hostname": self.hostname, "inventory": inventory},
        )

    def _heartbeats(self) -> None:
        # Its own connection: a long poll or an upload must not delay the heartbeat.
        beat = AgentClient(
            f"https://{self.client.host}:{self.client.port}",
            self.client.fingerprint,
            self.client.credential,
            retries=1,
        )
        beat_agent = Agent.__new__(Agent)  # same Exchange, its own connection
        beat_agent.client, beat_agent.exchange, beat_agent.hostname = (
            beat,
            self.exchange,
            self.hostname,
        )
        interval = float(os.environ.get("BULWARK_AGENT_HEARTBEAT_S", HEARTBEAT_S))
        while not self.stop.wait(interval):
            try:
                beat_agent.heartbeat()
            except Exception as exc:  # the next beat tries again
                log.warning("heartbeat failed: %s", exc)

    def run_forever(self) -> None:
        forget = getattr(self.exchange, "forget_snapshots", None)
        if forget is not None:
            forget()  # shadow copies a killed agent left behind: never completed
        self.heartbeat()
        self._beat.start()
        while not self.stop.is_set():
            try:
                task = self.client.get(
                    f"{PREFIX}/work?wait={POLL_WAIT_S}", timeout=POLL_WAIT_S + 30
                )
            except AgentHttpError as exc:
                log.error("the service refused the poll: %s", exc)
                if exc.status in (401, 403):
                    raise
                time.sleep(5)
                continue
            except OSError as exc:
                log.warning("the service is unreachable: %s", exc)
                time.sleep(5)
                continue
            if task:
                self.execute(task)

    def execute(self, task: dict[str, Any]) -> None:
        log.info("task %s: %s %s", task["id"], task["kind"], task["params"].get("database"))
        try:
            if task["kind"] == "backup":
                Backup(self, task).run()
            elif task["kind"] == "restore":
                Restore(self, task).run()
            else:
                self.fail(task, f"this agent (version {VERSION}) cannot do '{task['kind']}'")
        except Cancelled:
            log.info("task %s cancelled", task["id"])
        except Exception as exc:
            log.exception("task %s failed", task["id"])
            self.fail(task, str(exc) or type(exc).__name__)

    def fail(self, task: dict[str, Any], error: str, what: dict | None = None) -> None:
        try:
            self.client.post(
                f"{PREFIX}/tasks/{task['id']}/failed", {"error": error, "what": what or {}}
            )
        except (AgentHttpError, OSError) as exc:
            log.error("could not report the failure of task %s: %s", task["id"], exc)

    def progress(self, task_id: int, done: int, message: str = "", sent: int | None = None) -> None:
        body: dict[str, Any] = {"bytes_done": done, "message": message}
        if sent is not None:
            body["bytes_sent"] = sent
        reply = self.client.post(f"{PREFIX}/tasks/{task_id}/progress", body)
        if reply and reply.get("cancel"):
            raise Cancelled()


def _is_zero(data: bytes, zero: bytes) -> bool:
    # Comparing with the whole zero block costs no copy; a short last block gets its own.
    return data == zero if len(data) == len(zero) else data == bytes(len(data))


def _blocks(sources: list[tuple[Any, int]], block: int) -> Iterator[bytes]:
    """Fixed-size blocks over files read one after another (the last block short)."""
    buf = bytearray()
    for fh, size in sources:
        left = size
        with fh:
            while left > 0:
                data = fh.read(min(block - len(buf), left))
                if not data:
                    raise ExchangeError("a file of the snapshot ended early")
                left -= len(data)
                buf += data
                if len(buf) == block:
                    yield bytes(buf)
                    buf = bytearray()
    if buf:
        yield bytes(buf)


class Backup:
    def __init__(self, agent: Agent, task: dict[str, Any]):
        self.agent, self.task = agent, task
        self.params = task["params"]
        self.id = task["id"]
        self.client = agent.client
        self.digest = _digester(self.params.get("digest_key"))
        self.block = int(self.params["block_size"])
        self.done = 0
        self.sent_chunks = 0
        self.sent_bytes = 0
        self._last_progress = 0.0
        self._local = threading.local()
        self._clients: list[AgentClient] = []

    def run(self) -> None:
        ex = self.agent.exchange
        snap = ex.snapshot(self.params["database"], logs_after=self.params.get("logs_after"))
        completed = False
        try:
            self.agent.progress(self.id, 0, f"snapshot {snap.id} taken")
            try:
                check = ex.check(snap, self.block)
            except CheckFailed as exc:
                self.agent.fail(self.task, f"consistency check failed: {exc}", exc.what)
                return
            self.fingerprints = check.pop("block_fingerprints", None)
            try:
                groups = self._stream(snap)
            finally:
                for client in self._clients:
                    client.close()
            self.client.post(
                f"{PREFIX}/tasks/{self.id}/copied",
                {
                    "groups": groups,
                    "check": check,
                    "snapshot": {
                        "checkpoint_generation": snap.checkpoint_generation,
                        "log_range": list(snap.log_range),
                        "full": snap.full,
                        "full_because": snap.full_because,
                    },
                    "log_state": ex.log_state(snap.database).to_json(),
                    "sent_chunks": self.sent_chunks,
                    "sent_bytes": self.sent_bytes,
                    "reconnects": self.client.reconnects + sum(c.reconnects for c in self._clients),
                },
            )
            state = self._wait_durable()
            if state != DURABLE:
                return  # failed or cancelled by the service: never truncate
            truncation = ex.complete_backup(snap)
            completed = True
            self.client.post(f"{PREFIX}/tasks/{self.id}/done", {"truncation": truncation.to_json()})
        finally:
            if not completed:
                ex.release(snap)

    def _wait_durable(self) -> str:
        while True:
            doc = self.client.get(
                f"{PREFIX}/tasks/{self.id}?wait={POLL_WAIT_S}&unless=copied",
                timeout=POLL_WAIT_S + 30,
            )
            if doc["state"] == DURABLE or doc["state"] in FINISHED:
                return doc["state"]

    def _stream(self, snap: Snapshot) -> list[dict[str, Any]]:
        ex = self.agent.exchange
        groups = []
        by_role: dict[str, list] = {"database": [], "log": [], "checkpoint": []}
        for f in snap.files:
            by_role[f.role].append(f)
        for group, role in (
            ("database", "database"),
            ("logs", "log"),
            ("checkpoint", "checkpoint"),
        ):
            files = sorted(by_role[role], key=lambda f: (f.generation or 0, f.name))
            if not files and group != "logs":
                continue
            table, offset = [], 0
            for f in files:
                table.append(
                    {"name": f.name, "size": f.size, "generation": f.generation, "offset": offset}
                )
                offset += f.size
            if group == "database" and self.fingerprints is not None:
                blocks = self._send_database(snap, files[0])
            else:
                sources = [(ex.open_file(snap, f.name), f.size) for f in files]
                blocks = self._send(_blocks(sources, self.block)) if files else []
            groups.append({"group": group, "size": offset, "files": table, "blocks": blocks})
        return groups

    def _send(self, blocks: Iterator[bytes]) -> list[str | None]:
        names: list[str | None] = []
        batch: list[tuple[str, bytes]] = []
        zero = bytes(self.block)
        with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="upload") as pool:
            inflight: collections.deque[list[Future]] = collections.deque()
            for data in blocks:
                if not _is_zero(data, zero):
                    d = self.digest(data)
                    names.append(d)
                    batch.append((d, data))
                else:
                    names.append(None)  # all zero: not stored
                    self.done += len(data)
                if len(batch) >= BATCH_BLOCKS:
                    inflight.append(self._flush(batch, pool))
                    batch = []
                    # Two batches in flight: the next is read and hashed while one uploads.
                    while len(inflight) > 1:
                        self._finish(inflight.popleft())
            if batch:
                inflight.append(self._flush(batch, pool))
            while inflight:
                self._finish(inflight.popleft())
        return names

    def _send_database(self, snap: Snapshot, f: Any) -> list[str | None]:
        """The database, reusing the digest of every block whose fingerprint is the one the
        last backup saw (not read, not hashed); the repository is still asked about each, and
        a reused block it lacks is read and sent."""
        ex = self.agent.exchange
        key = f"{snap.database}:{self.block}:{self.params.get('digest_key') or ''}"
        previous = self.agent.known_blocks(key)
        count = -(-f.size // self.block)
        self._db_size = f.size
        fingerprints = self.fingerprints or []
        names: list[str | None] = []
        zero = bytes(self.block)
        with (
            ex.open_file(snap, f.name) as fh,
            ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="upload") as pool,
        ):
            inflight: collections.deque[list[Future]] = collections.deque()
            batch: list[tuple[str, bytes | None, int]] = []
            held = 0
            lock = threading.Lock()

            def read(index: int) -> bytes:
                with lock:  # one file position
                    fh.seek(index * self.block)
                    return fh.read(min(self.block, f.size - index * self.block))

            for index in range(count):
                fp = fingerprints[index] if index < len(fingerprints) else None
                known = previous.get(fp) if fp else None
                if known is not None:
                    names.append(known)
                    batch.append((known, None, index))
                else:
                    data = read(index)
                    if _is_zero(data, zero):
                        names.append(None)
                        self.done += len(data)
                        continue
                    d = self.digest(data)
                    names.append(d)
                    batch.append((d, data, index))
                    held += 1
                # Memory holds BATCH_BLOCKS blocks; digests alone go 8 times as many a call.
                if held >= BATCH_BLOCKS or len(batch) >= 8 * BATCH_BLOCKS:
                    inflight.append(self._flush_known(batch, pool, read))
                    batch, held = [], 0
                    while len(inflight) > 1:
                        self._finish(inflight.popleft())
            if batch:
                inflight.append(self._flush_known(batch, pool, read))
            while inflight:
                self._finish(inflight.popleft())
        self.agent.remember_blocks(
            key, {fp: d for fp, d in zip(fingerprints, names, strict=False) if fp and d}
        )
        return names

    def _flush_known(self, batch, pool: ThreadPoolExecutor, read) -> list[Future]:
        missing = set(
            self.client.post(
                f"{PREFIX}/tasks/{self.id}/missing", {"digests": [d for d, _, _ in batch]}
            )["missing"]
        )
        futures = []
        for digest, data, index in batch:
            length = min(self.block, self._db_size - index * self.block)
            if digest in missing:
                if data is None:
                    data = read(index)  # reused, but the repository lost it
                    if self.digest(data) != digest:
                        raise ExchangeError(f"database block {index} changed unseen")
                futures.append(pool.submit(self._put, digest, data))
                self.sent_chunks += 1
                self.sent_bytes += len(data)
                missing.discard(digest)
            self.done += length
        return futures

    def _finish(self, futures: list[Future]) -> None:
        for fut in futures:
            fut.result()
        now = time.monotonic()
        if now - self._last_progress > 1.0:
            self._last_progress = now
            self.agent.progress(self.id, self.done, sent=self.sent_bytes)

    def _client(self) -> AgentClient:
        """One connection per upload thread (HTTP/1.1 carries one request at a time)."""
        client = getattr(self._local, "client", None)
        if client is None:
            c = self.client
            client = AgentClient(f"https://{c.host}:{c.port}", c.fingerprint, c.credential)
            self._local.client = client
            self._clients.append(client)
        return client

    def _put(self, digest: str, data: bytes) -> None:
        self._client().request("PUT", f"{PREFIX}/tasks/{self.id}/chunks/{digest}", raw=data)

    def _flush(self, batch: list[tuple[str, bytes]], pool: ThreadPoolExecutor) -> list[Future]:
        missing = set(
            self.client.post(
                f"{PREFIX}/tasks/{self.id}/missing", {"digests": [d for d, _ in batch]}
            )["missing"]
        )
        futures = []
        for digest, data in batch:
            if digest in missing:
                futures.append(pool.submit(self._put, digest, data))
                self.sent_chunks += 1
                self.sent_bytes += len(data)
                missing.discard(digest)  # the same block twice in a batch goes once
            self.done += len(data)
        return futures


class Restore:
    """Files from the repository into place, soft recovery, a check, then mount."""

    def __init__(self, agent: Agent, task: dict[str, Any]):
        self.agent, self.task = agent, task
        self.params = task["params"]
        self.id = task["id"]
        self.client = agent.client
        self.digest = _digester(self.params.get("digest_key"))
        self.done = 0

    def run(self) -> None:
        ex = self.agent.exchange
        p = self.params
        database, mode = p["database"], p["mode"]
        if mode == "original":
            ex.dismount(database)
        target = ex.restore_path(database, mode, p.get("path"))
        upto = p.get("upto_generation")
        written = self._write(target, upto)
        self.agent.progress(self.id, self.done, "files written; soft recovery")
        try:
            result = ex.recover(target, database, upto)
        except CheckFailed as exc:
            self.agent.fail(self.task, f"the restored database failed its check: {exc}", exc.what)
            return
        ex.finish_restore(database, mode, target)
        result.update(path=str(target), files=written)
        self.client.post(f"{PREFIX}/tasks/{self.id}/done", {"result": result})

    def _write(self, target: Path, upto: int | None) -> int:
        target = Path(target)
        (target / "logs").mkdir(parents=True, exist_ok=True)
        written = 0
        for group in self.params["groups"]:
            files = group["files"]
            if group["group"] == "logs" and upto is not None:
                files = [f for f in files if f["generation"] is None or f["generation"] <= upto]
            folder = target / "logs" if group["group"] == "logs" else target
            self._write_group(group, files, folder)
            written += len(files)
        return written

    def _write_group(self, group: dict[str, Any], files: list[dict], folder: Path) -> None:
        """Each block fetched once (several logs share one), a few ahead of the writing, and
        cut into the files it holds."""
        bs = int(group["block_size"])
        needed: list[int] = []
        for f in files:
            for index in range(f["offset"] // bs, -(-(f["offset"] + f["size"]) // bs)):
                if not needed or needed[-1] != index:
                    needed.append(index)
        blocks = self._fetch_ahead(group, needed, bs)
        current: tuple[int, bytes] | None = None
        for f in files:
            start, end = f["offset"], f["offset"] + f["size"]
            with open(folder / f["name"], "wb") as out:
                for index in range(start // bs, -(-end // bs)):
                    if current is None or current[0] != index:
                        current = next(blocks)
                    data = current[1]
                    lo = max(start, index * bs) - index * bs
                    hi = min(end, index * bs + len(data)) - index * bs
                    out.write(data[lo:hi])
                    self.done += hi - lo

    def _fetch_ahead(self, group: dict[str, Any], needed: list[int], bs: int):
        local = threading.local()
        clients: list[AgentClient] = []

        def fetch(index: int) -> tuple[int, bytes]:
            digest = group["blocks"][index]
            if digest is None:
                return index, bytes(min(bs, group["size"] - index * bs))
            client = getattr(local, "client", None)
            if client is None:
                c = self.client
                client = local.client = AgentClient(
                    f"https://{c.host}:{c.port}", c.fingerprint, c.credential
                )
                clients.append(client)
            _, data = client.request(
                "GET", f"{PREFIX}/tasks/{self.id}/chunks/{digest}", accept_raw=True
            )
            if self.digest(data) != digest:
                raise ExchangeError(f"block {index} arrived damaged (hash mismatch)")
            return index, data

        with ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="download") as pool:
            pending: collections.deque[Future] = collections.deque()
            todo = iter(needed)
            try:
                for index in todo:
                    pending.append(pool.submit(fetch, index))
                    if len(pending) >= 2 * UPLOAD_THREADS:
                        break
                while pending:
                    got = pending.popleft().result()
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending.append(pool.submit(fetch, nxt))
                    yield got
            finally:
                for fut in pending:
                    fut.cancel()
                for client in clients:
                    client.close()
