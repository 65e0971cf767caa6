"""The archive's people search takes '%' and '_' as the characters they are."""

from __future__ import annotations

from app.db.models import ArchiveMessage, Connection
from app.db.types import utcnow
from app.domain.connections import ConnectionKind
from app.mailboxes.archive import SearchQuery, search


def test_wildcards_in_a_people_search_are_literal(app):
    with app.state.runtime.db.session() as s:
        repo = Connection(name="repo", kind=ConnectionKind.REPOSITORY)
        s.add(repo)
        s.flush()
        for n, sender in enumerate(["a_b@example.test", "axb@example.test", "100%@example.test"]):
            s.add(
                ArchiveMessage(
                    repository_id=repo.id,
                    digest=f"{n:064d}",
                    size=1,
                    subject=f"m{n}",
                    sender=sender,
                    recipients="",
                    attachments=[],
                    first_seen_at=utcnow(),
                )
            )
    with app.state.runtime.db.session() as s:
        assert [h.sender for h in search(s, SearchQuery(people="a_b")).hits] == ["a_b@example.test"]
        assert [h.sender for h in search(s, SearchQuery(people="%")).hits] == ["100%@example.test"]
