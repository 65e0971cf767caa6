"""Mailbox backup against Dovecot: 5 mailboxes, 5,500 messages.

Measured in one run, on one Dovecot (tests/mailboxes/dovecot/dovecot.conf, CONDSTORE on):

- a bare IMAPClient loop fetching the same messages (BODY.PEEK[], FLAGS, INTERNALDATE in
  batches of 250 UIDs), before and after the backups; the faster run is the reference;
  then the same loop over two connections at once (two processes);
- the full backup of all mailboxes (fetch, store in an encrypted repository, catalog and
  full-text index), and its rate against the bare fetch;
- an unchanged incremental (nothing to fetch: CONDSTORE says so per folder);
- an incremental after 2% of the messages changed (new mail, flag changes, deletes);
- the restore of a 1,000-message folder into another mailbox (MULTIAPPEND);
- a rebuild of the archive's full-text index (indexing rate) and the latency of 20 searches
  (terms, people, dates, mailbox; each run 5 times, median reported);
- last, the same mailboxes backed up in full again through a second connection: messages the
  repository already holds, so no chunk file is written (``full_held_msgs_per_s``). Against
  the full backup this separates the cost of creating one file per message in a fresh
  repository from the rest of the pipeline (IMAP, hashing, catalog).

    .venv/bin/python benchmarks/mailbox_backup.py [--database-url URL] [--messages-per-mailbox 1100]

SQLite in a temp dir by default; give a PostgreSQL URL (an empty database) to measure that.
Ends with exactly one line:

    RESULT full_msgs_per_s=… bare_fetch_msgs_per_s=… incr_unchanged_s=… restore_msgs_per_s=…
    search_median_ms=… incr_2pct_s=… index_msgs_per_s=… full_held_msgs_per_s=…
    bare_fetch_2conn_msgs_per_s=… bare_fetch_quiet_msgs_per_s=… (one line)

The backup runs as the job does: the mailboxes one after another in one process (an IMAP
thread, a thread storing messages, a thread committing the catalog; Dovecot takes the other
core). The reference stays the single-connection bare fetch (the issue's definition);
``bare_fetch_2conn_msgs_per_s`` is the same fetch over two connections in two processes,
the mailboxes split between them; ``bare_fetch_quiet_msgs_per_s`` is the single-connection
loop without the imaplib debug formatting IMAPClient turns on (Bulwark's sessions turn it
off): both say how far the server goes beyond the reference.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this directory comes first on sys.path and its sibling scripts would
# shadow the standard library's modules of the same names (``mailbox`` for the mbox export,
# ``array`` for multiprocessing): only the project root is added.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import ssl  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

from imapclient import IMAPClient  # noqa: E402

from app.db import migrate  # noqa: E402
from app.db.models import Connection  # noqa: E402
from app.db.session import Database  # noqa: E402
from app.domain.connections import ConnectionKind  # noqa: E402
from app.mailboxes import restore as mrestore  # noqa: E402
from app.mailboxes.archive import SearchQuery, search  # noqa: E402
from app.mailboxes.backup import backup_mailbox  # noqa: E402
from app.mailboxes.indexer import index_pending  # noqa: E402
from app.repository import open_repository_at  # noqa: E402
from tests.mailboxes.conftest import account_for  # noqa: E402
from tests.mailboxes.dovecot_fixture import running_dovecot  # noqa: E402
from tests.mailboxes.mailgen import VOCABULARY, WORDS, message  # noqa: E402

MAILBOXES = 5
FOLDERS = ("INBOX", "Archiv/Grüße")
T0 = datetime(2024, 1, 1, tzinfo=UTC)
BENCH_KEY = b"bench-key" * 4


def populate(server, users: list[str], per_mailbox: int) -> int:
    """INBOX gets 1,000 (the folder restored later), the rest goes to a second folder."""
    rng = random.Random(7)
    ascii_words = [w.lower() for w in WORDS if w.isascii()]
    total = 0
    for m, user in enumerate(users):
        client = IMAPClient(server.host, server.port, ssl=False)
        client.login(user, server.users[user])
        client.create_folder(FOLDERS[1])
        for f, (folder, count) in enumerate(
            ((FOLDERS[0], 1000), (FOLDERS[1], max(0, per_mailbox - 1000)))
        ):
            batch = []
            for i in range(count):
                n = (m * 100_000) + (f * 10_000) + i
                roll = rng.random()
                raw = message(
                    n,
                    sender=f"{rng.choice(ascii_words)}{n % 50}@example.com",
                    to=f"{user}@example.com",
                    attachment=os.urandom(40_000) if roll < 0.05 else None,
                    size=1_000_000 if roll > 0.998 else rng.randrange(500, 6000),
                    when=T0 + timedelta(minutes=n),
                )
                flags = ["\\Seen"] if rng.random() < 0.7 else []
                batch.append({"msg": raw, "flags": flags, "date": T0 + timedelta(minutes=i)})
                if len(batch) == 200:
                    client.multiappend(folder, batch)
                    batch = []
            if batch:
                client.multiappend(folder, batch)
            total += count
        client.logout()
    return total


def bare_fetch(server, users: list[str], *, quiet: bool = False) -> tuple[int, float]:
    """What the server can serve: the same messages, the same items, over the same STARTTLS
    session the backup uses, nothing stored. ``quiet`` turns off the imaplib debug output
    IMAPClient enables (it formats every response, messages included, for a logger that
    drops it); Bulwark's sessions run that way."""
    context = ssl.create_default_context(cafile=server.cafile)
    context.check_hostname = False
    count, started = 0, time.perf_counter()
    for user in users:
        client = IMAPClient(server.host, server.port, ssl=False)
        client.starttls(context)
        client.login(f"{user}*{server.master_user}", server.master_password)
        if quiet:
            client._imap.debug = 0
        for folder in FOLDERS:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            for i in range(0, len(uids), 250):
                data = client.fetch(uids[i : i + 250], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
                count += len(data)
        client.logout()
    return count, time.perf_counter() - started


def _bare_fetch_child(server_info, users, barrier, results) -> None:
    host, port, cafile, master_user, master_password = server_info
    server = argparse.Namespace(
        host=host,
        port=port,
        cafile=cafile,
        master_user=master_user,
        master_password=master_password,
    )
    barrier.wait()  # started and imported: only the fetching is timed
    count, _ = bare_fetch(server, users)
    results.put((count, time.monotonic()))


def bare_fetch_2conn(server, users: list[str]) -> tuple[int, float]:
    """The bare fetch over two connections at once, one process each (each its own GIL, as
    the backup's worker processes), the mailboxes split between them: what the server and
    both cores can serve together. Process start-up is not counted."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(3), context.Queue()
    info = (server.host, server.port, server.cafile, server.master_user, server.master_password)
    children = [
        context.Process(target=_bare_fetch_child, args=(info, users[i::2], barrier, results))
        for i in range(2)
    ]
    for child in children:
        child.start()
    barrier.wait()
    started = time.monotonic()
    done = [results.get(timeout=600) for _ in children]
    for child in children:
        child.join()
    return sum(c for c, _ in done), max(t for _, t in done) - started


def change_2_percent(server, users: list[str], total: int) -> int:
    rng = random.Random(11)
    per = max(1, total * 2 // 100 // len(users))  # per mailbox: a third each kind
    changed = 0
    for m, user in enumerate(users):
        client = IMAPClient(server.host, server.port, ssl=False)
        client.login(user, server.users[user])
        new = [{"msg": message(900_000 + m * 1000 + i), "date": T0} for i in range(per // 3)]
        client.multiappend("INBOX", new)
        client.select_folder(FOLDERS[1])
        uids = client.search("ALL")
        picks = rng.sample(uids, min(len(uids), per - per // 3))
        half = len(picks) // 2
        client.add_flags(picks[:half], ["\\Flagged"])
        client.delete_messages(picks[half:])
        client.expunge()
        changed += len(new) + len(picks)
        client.logout()
    return changed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--messages-per-mailbox", type=int, default=1100)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bulwark-mail-bench-"))
    url = args.database_url or f"sqlite:///{work / 'bench.db'}"
    try:
        migrate.upgrade(url)
        db = Database(url, pre_ping=False)  # as a worker process runs its jobs
        repo = open_repository_at(work / "repo", key=BENCH_KEY, create=True, encrypted=True)
        with running_dovecot() as server:
            users = [f"bench{i}" for i in range(MAILBOXES)]
            for u in users:
                server.add_user(u)
            with db.session() as s:
                r = Connection(
                    name="repo",
                    kind=ConnectionKind.REPOSITORY,
                    options={"path": str(work / "repo")},
                )
                c = Connection(
                    name="imap", kind=ConnectionKind.MAIL, host=server.host, port=server.port
                )
                s.add_all([r, c])
                s.flush()
                repo_id, conn_id = r.id, c.id
            repo.id = repo_id
            account = account_for(server)
            started = time.perf_counter()
            total = populate(server, users, args.messages_per_mailbox)
            print(
                f"populated {MAILBOXES} mailboxes with {total} messages "
                f"in {time.perf_counter() - started:.1f} s"
            )

            bare1, bare1_s = bare_fetch(server, users)
            print(f"bare fetch: {bare1} messages in {bare1_s:.2f} s = {bare1 / bare1_s:.0f}/s")

            def backup_all(**kw):
                """The mailboxes one after another, as the backup job does, through one
                repository handle opened for the pass (as each job opens its own)."""
                t = time.perf_counter()
                job_repo = open_repository_at(work / "repo", key=BENCH_KEY, id=repo_id)
                outcomes = [
                    backup_mailbox(
                        db,
                        job_repo,
                        account,
                        connection_id=conn_id,
                        mailbox=u,
                        repository_id=repo_id,
                        **kw,
                    )
                    for u in users
                ]
                return outcomes, time.perf_counter() - t

            # The backup pass makes the restore points; cataloging and the full-text index
            # follow as their own pass (as the backup job's "index" step does).
            def backup_and_index():
                outcomes, seconds = backup_all(index=False)
                t = time.perf_counter()
                index_pending(db, repo, repo_id)
                return outcomes, seconds + time.perf_counter() - t

            full, full_s = backup_all(index=False)
            fetched = sum(o.new_messages for o in full)
            mb = sum(o.fetched_bytes for o in full) / 1e6
            full_rate = fetched / full_s
            print(
                f"full backup: {fetched} messages ({mb:.0f} MB) in {full_s:.2f} s "
                f"= {full_rate:.0f}/s"
            )
            t = time.perf_counter()
            indexed = index_pending(db, repo, repo_id)
            index_s = time.perf_counter() - t
            print(
                f"archive indexing: {indexed} messages in {index_s:.2f} s "
                f"= {indexed / index_s:.0f}/s; backup and index together "
                f"{fetched / (full_s + index_s):.0f}/s"
            )

            bare2, bare2_s = bare_fetch(server, users)
            print(
                f"bare fetch again: {bare2} messages in {bare2_s:.2f} s = {bare2 / bare2_s:.0f}/s"
            )
            bare_rate = max(bare1 / bare1_s, bare2 / bare2_s)
            print(f"full backup at {100 * full_rate / bare_rate:.0f}% of the bare fetch")
            quiet, quiet_s = bare_fetch(server, users, quiet=True)
            quiet_rate = quiet / quiet_s
            print(
                f"bare fetch without imaplib's debug formatting: {quiet_rate:.0f}/s; the full "
                f"backup at {100 * full_rate / quiet_rate:.0f}% of that"
            )
            bare2c, bare2c_s = bare_fetch_2conn(server, users)
            bare2c_rate = bare2c / bare2c_s
            print(
                f"bare fetch over 2 connections (2 processes): {bare2c} messages in "
                f"{bare2c_s:.2f} s = {bare2c_rate:.0f}/s; the full backup "
                f"at {100 * full_rate / bare2c_rate:.0f}% of that"
            )

            unchanged, unchanged_s = backup_and_index()
            assert sum(o.new_messages + o.flag_changes + o.expunged for o in unchanged) == 0
            print(
                f"unchanged incremental: {unchanged_s:.3f} s "
                f"({sum(o.unchanged_folders for o in unchanged)} folders skipped by CONDSTORE)"
            )

            changed = change_2_percent(server, users, total)
            incr, incr_s = backup_and_index()
            print(
                f"incremental after {changed} changes: {incr_s:.3f} s "
                f"({sum(o.new_messages for o in incr)} new, "
                f"{sum(o.flag_changes for o in incr)} re-flagged, "
                f"{sum(o.expunged for o in incr)} gone)"
            )

            server.add_user("restored")
            with db.session() as s:
                point = mrestore.restore_point(s, full[0].restore_point_id)
                items = mrestore.items_in(s, point, folders=["INBOX"])
            t = time.perf_counter()
            out = mrestore.restore(
                repo, account, items, mrestore.Destination("restored", "folder", "Restored")
            )
            restore_s = time.perf_counter() - t
            restore_rate = out.restored / restore_s
            print(
                f"folder restore: {out.restored} messages in {restore_s:.2f} s "
                f"= {restore_rate:.0f}/s"
            )

            # words from the most common to rare ones, pairs, people, dates, a mailbox
            picks = [VOCABULARY[i] for i in (0, 3, 10, 30, 100, 300, 1000, 2000, 3000, 3500)]
            queries = [SearchQuery(terms=w) for w in picks]
            queries += [
                SearchQuery(terms=f"{a} {b}") for a, b in zip(picks[:5], picks[5:], strict=True)
            ]
            queries += [SearchQuery(people="audit3"), SearchQuery(people="bench2@example.com")]
            queries += [
                SearchQuery(sent_from=T0 + timedelta(hours=2), sent_to=T0 + timedelta(hours=8))
            ]
            queries += [SearchQuery(terms=picks[4], mailbox="bench1")]
            queries += [SearchQuery(terms="zürich")]
            times = []
            with db.session() as s:
                hits = []
                for q in queries:
                    for _ in range(5):
                        t = time.perf_counter()
                        r = search(s, q, limit=50)
                        times.append((time.perf_counter() - t) * 1000)
                    hits.append(r.total)
            search_ms = statistics.median(times)
            print(
                f"search: {len(queries)} queries x5, median {search_ms:.1f} ms, "
                f"p90 {statistics.quantiles(times, n=10)[-1]:.1f} ms; hits {hits}"
            )

            # The same mailboxes through a second connection: a full backup whose messages
            # the repository already holds (no chunk file to create). Against the full backup
            # above this splits the time between storing files and everything else.
            with db.session() as s:
                again = Connection(
                    name="imap-again",
                    kind=ConnectionKind.MAIL,
                    host=server.host,
                    port=server.port,
                )
                s.add(again)
                s.flush()
                conn_id = again.id
            held, held_s = backup_all(index=False)
            held_rate = sum(o.new_messages for o in held) / held_s
            print(
                f"full backup of messages the repository already holds: "
                f"{sum(o.new_messages for o in held)} in {held_s:.2f} s = {held_rate:.0f}/s "
                f"({100 * held_rate / bare_rate:.0f}% of the bare fetch)"
            )
        db.dispose()
        print(
            f"RESULT full_msgs_per_s={full_rate:.0f} bare_fetch_msgs_per_s={bare_rate:.0f} "
            f"incr_unchanged_s={unchanged_s:.3f} restore_msgs_per_s={restore_rate:.0f} "
            f"search_median_ms={search_ms:.1f} incr_2pct_s={incr_s:.3f} "
            f"index_msgs_per_s={indexed / index_s:.0f} full_held_msgs_per_s={held_rate:.0f} "
            f"bare_fetch_2conn_msgs_per_s={bare2c_rate:.0f} "
            f"bare_fetch_quiet_msgs_per_s={quiet_rate:.0f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
