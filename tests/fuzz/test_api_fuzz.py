"""Schemathesis over every operation of the API, as an admin: no server error, no status
the document does not declare, every body as its schema says.

Bounded: ``FUZZ_EXAMPLES`` generated cases per operation, derandomized so a run repeats;
a failure names the request that reproduces it. Each operation is its own test with a
fresh database, so a destructive operation cannot starve the others. The totals are
written to ``test-output/fuzz-<database>.txt``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import Settings
from app.main import create_app
from tests.conftest import TEST_DB

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


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_api_fuzz(app, client, admin, method, path):
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
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
