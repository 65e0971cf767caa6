"""Test fixtures shared by the whole suite.

The suite runs once per database: ``BULWARK_TEST_DB=sqlite`` (default) or ``postgresql``.
For PostgreSQL each test session creates its own database on 127.0.0.1:5432 and drops it
at the end. In CI (``CI=true``) a missing PostgreSQL is an error, never a skip.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text

import app.db.models  # noqa: F401
from app.accounts import create_token, create_user
from app.audit import Actor
from app.config import Settings
from app.db import migrate
from app.db.base import Base
from app.main import create_app
from app.security.roles import Role

TEST_DB = os.environ.get("BULWARK_TEST_DB", "sqlite")
PG_ADMIN_URL = os.environ.get(
    "BULWARK_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"


def pytest_report_header(config):
    return f"bulwark database backend: {TEST_DB}"


class PostgresDatabases:
    """Creates throwaway databases on the local PostgreSQL server."""

    def __init__(self, admin_url: str):
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []
        try:
            with self.admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            raise RuntimeError(
                f"PostgreSQL is not reachable at {admin_url}: {exc}. "
                "Start it (see README) or run with BULWARK_TEST_DB=sqlite."
            ) from exc

    def new(self, template: str | None = None) -> str:
        name = f"bulwark_test_{uuid.uuid4().hex[:12]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
        self.created.append(name)
        return self.url(name)

    def url(self, name: str) -> str:
        return self.admin.url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases | None]:
    if TEST_DB != "postgresql":
        yield None
        return
    dbs = PostgresDatabases(PG_ADMIN_URL)
    yield dbs
    dbs.drop_all()


@pytest.fixture
def empty_database_url(tmp_path: Path, postgres: PostgresDatabases | None) -> str:
    """A fresh database with no schema at all (for migration tests)."""
    if postgres is not None:
        return postgres.new()
    return f"sqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory, postgres: PostgresDatabases | None) -> str:
    """A database migrated to head once per session; each test starts from a copy of it."""
    if postgres is not None:
        url = postgres.new()
        migrate.upgrade(url)
        return make_url(url).database
    path = tmp_path_factory.mktemp("template") / "bulwark.db"
    migrate.upgrade(f"sqlite:///{path}")
    return str(path)


@pytest.fixture
def database_url(tmp_path: Path, postgres: PostgresDatabases | None, migrated_template) -> str:
    """A database at the newest schema with no rows in it, for one test."""
    if postgres is not None:
        # Emptying the session's database is far cheaper than creating one per test.
        url = postgres.url(migrated_template)
        engine = create_engine(url)
        with engine.begin() as conn:
            # DELETE beats TRUNCATE on a handful of rows (TRUNCATE rewrites every table).
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        engine.dispose()
        return url
    path = tmp_path / "bulwark.db"
    shutil.copyfile(migrated_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key="test-secret-key-not-for-production",
        admin_password="admin-password-123",
        login_max_failures=5,
    )


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT


@pytest.fixture(scope="session")
def lab():
    """The vSphere lab (govmomi simulator with an Exchange estate), one per test session."""
    from tests.lab_fixture import LabUnavailable, must_have_lab, running_lab

    try:
        with running_lab() as running:
            yield running
    except LabUnavailable as exc:
        if must_have_lab():
            pytest.fail(f"the vSphere lab is required in CI: {exc}")
        pytest.skip(f"vSphere lab unavailable (run 'make test' to build it): {exc}")


def _s3_peer(start):
    from tests.s3_fixture import S3Unavailable, must_have_s3

    try:
        with start() as peer:
            yield peer
    except S3Unavailable as exc:
        if must_have_s3():
            pytest.fail(f"the S3 test servers are required in CI: {exc}")
        pytest.skip(f"S3 server unavailable: {exc}")


@pytest.fixture(scope="session")
def seaweedfs():
    """SeaweedFS (``weed server -s3``) on loopback, one per test session."""
    from tests.s3_fixture import seaweedfs as start

    yield from _s3_peer(start)


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3 server on loopback, one per test session."""
    from tests.s3_fixture import moto_server as start

    yield from _s3_peer(start)


TEST_ACTOR = Actor("test-setup", "system")


@pytest.fixture
def app(settings):
    return create_app(settings)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def headers_for(app, client) -> Callable[[Role], dict[str, str]]:
    """API token headers for a fresh user with the given role."""
    made: dict[Role, dict[str, str]] = {}

    def _make(role: Role) -> dict[str, str]:
        if role not in made:
            with app.state.runtime.db.session() as session:
                user = create_user(session, TEST_ACTOR, f"user-{role}", "long-password-123", role)
                _, token = create_token(session, TEST_ACTOR, user, "tests", 1)
            made[role] = {"Authorization": f"Bearer {token}"}
        return made[role]

    return _make


@pytest.fixture
def admin(headers_for) -> dict[str, str]:
    return headers_for(Role.ADMIN)
