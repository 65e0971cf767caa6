from __future__ import annotations


def assert_problem(response, status: int, contains: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if contains:
        assert contains in body["detail"], body
    return body
