"""Schemathesis over every operation of the API, as an admin: no server error, no status
the document does not declare, every body as its schema says.

Bounded: ``FUZZ_EXAMPLES`` generated cases per operation, derandomized so a run repeats;
a failure names the request that reproduces it. One service per module (starting one per
operation would cost more than the fuzzing); before each operation the fuzzing admin is
made whole again and gets a fresh token, so an operation that revokes, demotes or disables
it cannot starve the ones after. The totals go to ``test-output/fuzz-<database>.txt``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import select

from app.accounts import create_token, create_user
from app.config import Settings
from app.db import migrate
from app.db.models import ServiceSetting, User
from app.main import create_app
from app.security.roles import Role
from tests.conftest import TEST_ACTOR, TEST_DB

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _operations() -> list[tuple[str, str]]:
    # The document needs no database: the engine connects only when first used.
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(
            Settings(data_dir=Path(tmp), database_url=f"sqlite:///{tmp}/x.db", secret_key="k")
        )
        spec = app.openapi()
    return [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops]


OPERATIONS = _operations()
TOTALS = {"operations": 0, "cases": 0, "failures": 0}


@pytest.fixture(scope="module", autouse=True)
def _report(output_dir):
    yield
    line = (
        f"fuzz {TEST_DB}: operations={TOTALS['operations']} cases={TOTALS['cases']} "
        f"failures={TOTALS['failures']} (examples per operation: {EXAMPLES})"
    )
    (output_dir / f"fuzz-{TEST_DB}.txt").write_text(line + "\n")
    print("\n" + line)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory, postgres):
    tmp = tmp_path_factory.mktemp("fuzz")
    url = postgres.new() if postgres is not None else f"sqlite:///{tmp / 'fuzz.db'}"
    migrate.upgrade(url)
    app = create_app(
        Settings(
            data_dir=tmp / "data",
            database_url=url,
            secret_key="fuzz-secret-key",
            admin_password="admin-password-123",
        )
    )
    with TestClient(app):  # runs the lifespan (bootstrap) once
        with app.state.runtime.db.session() as session:
            create_user(session, TEST_ACTOR, "fuzzer", "fuzz-password-123", Role.ADMIN)
        schema = schemathesis.openapi.from_dict(app.openapi())
        schema.app = app
        yield app, schema


def _fresh_admin(app) -> dict[str, str]:
    with app.state.runtime.db.session() as session:
        user = session.scalar(select(User).where(User.username == "fuzzer"))
        user.role, user.is_active = Role.ADMIN, True
        session.query(ServiceSetting).delete()  # the default security settings
        _, token = create_token(session, TEST_ACTOR, user, "fuzz", 1)
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_api_fuzz(fuzz_app, method, path):
    app, schema = fuzz_app
    admin = _fresh_admin(app)
    operation = schema[path][method]
    TOTALS["operations"] += 1

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        TOTALS["cases"] += 1
        case.call_and_validate(headers=admin, checks=CHECKS)

    try:
        run()
    except BaseException:
        TOTALS["failures"] += 1
        raise
