"""Fixtures for mailbox tests: Dovecot (with and without CONDSTORE/QRESYNC), an encrypted
repository, the two connections, and helpers to change mail on the server."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from imapclient import IMAPClient

from app.adapters.mail import MailAccount
from app.db.models import Connection
from app.db.session import Database
from app.domain.connections import ConnectionKind
from app.mailboxes.backup import BackupOutcome, backup_mailbox
from app.repository import Repository, open_repository_at
from tests.mailboxes.dovecot_fixture import (
    Dovecot,
    DovecotUnavailable,
    must_have_dovecot,
    running_dovecot,
)

ROOT_KEY = b"mailbox-tests-root-key-0123456789"
_users = itertools.count(1)


def _start(hide: bool) -> Iterator[Dovecot]:
    try:
        with running_dovecot(hide_condstore=hide) as server:
            yield server
    except DovecotUnavailable as exc:
        if must_have_dovecot():
            pytest.fail(f"Dovecot is required in CI: {exc}")
        pytest.skip(f"Dovecot unavailable: {exc}")


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    yield from _start(False)


@pytest.fixture(scope="session")
def dovecot_exchange_like() -> Iterator[Dovecot]:
    """Dovecot advertising what Exchange does: no CONDSTORE, QRESYNC or MULTIAPPEND."""
    yield from _start(True)


@pytest.fixture(params=["condstore", "exchange-like"])
def imap_server(request) -> Dovecot:
    name = "dovecot" if request.param == "condstore" else "dovecot_exchange_like"
    return request.getfixturevalue(name)


def account_for(server: Dovecot, **overrides) -> MailAccount:
    values = {
        "host": server.host,
        "port": server.port,
        "username": server.master_user,
        "password": server.master_password,
        "tls": "starttls",
        "verify_tls": False,
        "trusted_thumbprint": server.thumbprint,
    }
    values.update(overrides)
    return MailAccount(**values)


@dataclass
class MailEnv:
    db: Database
    repo: Repository
    server: Dovecot
    account: MailAccount
    repository_id: int
    connection_id: int
    user: str
    other: str

    def backup(self, user: str | None = None, **kw) -> BackupOutcome:
        return backup_mailbox(
            self.db,
            self.repo,
            self.account,
            connection_id=self.connection_id,
            mailbox=user or self.user,
            repository_id=self.repository_id,
            **kw,
        )

    def imap(self, user: str | None = None) -> IMAPClient:
        """A plain session as the user, to change mail the way a mail client would."""
        client = IMAPClient(self.server.host, self.server.port, ssl=False)
        name = user or self.user
        client.login(name, self.server.users[name])
        client.normalise_times = False
        return client

    def append(
        self,
        raw: bytes,
        folder: str = "INBOX",
        flags: tuple[str, ...] = (),
        when: datetime | None = None,
        user: str | None = None,
    ) -> None:
        with self.imap(user) as c:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            c.append(folder, raw, flags, when)


@pytest.fixture
def mail_env(database_url: str, tmp_path: Path, imap_server: Dovecot) -> Iterator[MailEnv]:
    db = Database(database_url)
    repo_path = tmp_path / "repo"
    repo = open_repository_at(repo_path, key=ROOT_KEY, create=True, encrypted=True)
    n = next(_users)
    user, other = f"user{os.getpid()}x{n}", f"other{os.getpid()}x{n}"
    imap_server.add_user(user)
    imap_server.add_user(other)
    with db.session() as s:
        repository = Connection(
            name="repo",
            kind=ConnectionKind.REPOSITORY,
            options={"path": str(repo_path), "encrypted": True},
        )
        conn = Connection(
            name="imap",
            kind=ConnectionKind.MAIL,
            host=imap_server.host,
            port=imap_server.port,
            username=imap_server.master_user,
            options={"tls": "starttls", "mailboxes": [user, other]},
            verify_tls=False,
        )
        s.add_all([repository, conn])
        s.flush()
        ids = repository.id, conn.id
    repo.id = ids[0]
    yield MailEnv(db, repo, imap_server, account_for(imap_server), ids[0], ids[1], user, other)
    db.dispose()
