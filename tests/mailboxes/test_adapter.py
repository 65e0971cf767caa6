"""The IMAP adapter against Dovecot: sign-in modes, certificate trust, clear errors, batches
bounded by bytes, and what the server advertises."""

from __future__ import annotations

import pytest

from app.adapters import mail
from app.adapters.mail.client import iter_batches
from tests.mailboxes.conftest import account_for


def test_master_user_and_authzid_sign_in_to_a_users_mailbox(dovecot):
    dovecot.add_user("adapteruser")
    for login in ("master_user", "authzid"):
        with mail.connect(account_for(dovecot, login=login), "adapteruser") as session:
            assert session.mailbox == "adapteruser"
            assert [f.name for f in session.folders()] == ["INBOX"]
            assert session.condstore and session.qresync and session.multiappend


def test_exchange_like_server_offers_no_condstore(dovecot_exchange_like):
    dovecot_exchange_like.add_user("exuser")
    with mail.connect(account_for(dovecot_exchange_like), "exuser") as session:
        assert not session.condstore and not session.qresync and not session.multiappend
        assert session.examine("INBOX").highestmodseq is None


def test_tls_verified_against_a_ca_and_pinned_by_thumbprint(dovecot):
    dovecot.add_user("tlsuser")
    ca = account_for(
        dovecot,
        tls="tls",
        port=dovecot.tls_port,
        verify_tls=True,
        trusted_thumbprint=None,
        cafile=dovecot.cafile,
    )
    with mail.connect(ca, "tlsuser") as session:
        assert session.folders()
    # an unknown certificate is refused, with the thumbprint the operator may choose to trust
    unknown = account_for(dovecot, verify_tls=True, trusted_thumbprint=None)
    with pytest.raises(mail.CertificateUntrusted):
        mail.connect(unknown, "tlsuser")
    wrong_pin = account_for(dovecot, trusted_thumbprint="00" * 32)
    with pytest.raises(mail.CertificateUntrusted) as exc:
        mail.connect(wrong_pin, "tlsuser")
    assert exc.value.thumbprint == dovecot.thumbprint


def test_clear_errors_for_a_wrong_password_and_an_unreachable_server(dovecot):
    dovecot.add_user("erruser")
    with pytest.raises(mail.AuthenticationFailed, match="erruser"):
        mail.connect(account_for(dovecot, password="wrong"), "erruser")
    with pytest.raises(mail.Unreachable):
        mail.connect(account_for(dovecot, port=1, timeout=2), "erruser")


def test_batches_are_bounded_by_count_and_bytes():
    sizes = {1: 10, 2: 20 * 1024 * 1024, 3: 20 * 1024 * 1024, 4: 5, **{n: 1 for n in range(5, 9)}}
    batches = list(iter_batches(sizes, max_count=3, max_bytes=32 * 1024 * 1024))
    assert batches == [[1, 2], [3, 4, 5], [6, 7, 8]]
    assert sum(batches, []) == sorted(sizes)
    # a message larger than the byte bound goes alone, never dropped
    assert list(iter_batches({7: 100}, max_bytes=10)) == [[7]]


def test_new_messages_are_listed_with_exact_sizes_for_large_ones_and_a_bound_for_the_rest(
    dovecot,
):
    from imapclient import IMAPClient

    from app.adapters.mail.client import SIZED_FROM
    from tests.mailboxes.mailgen import message

    dovecot.add_user("sizeuser")
    raws = [message(1, size=2_000), message(2, size=SIZED_FROM * 3), message(3, size=500)]
    client = IMAPClient(dovecot.host, dovecot.port, ssl=False)
    client.login("sizeuser", dovecot.users["sizeuser"])
    client.multiappend("INBOX", [{"msg": raw} for raw in raws])
    client.logout()
    with mail.connect(account_for(dovecot), "sizeuser") as session:
        session.examine("INBOX")
        uids = session.uids()
        sizes = session.sizes_after(0)
        assert sorted(sizes) == uids and len(uids) == 3
        # the large one exactly (batches are bounded by it), the small ones by SIZED_FROM
        assert sizes[uids[1]] == len(raws[1])
        assert sizes[uids[0]] == sizes[uids[2]] == SIZED_FROM
        assert len(raws[0]) <= SIZED_FROM and len(raws[2]) <= SIZED_FROM
        # above the highest UID: nothing, although "n:*" names the last message
        assert session.sizes_after(uids[-1]) == {}
        assert sorted(session.sizes_after(uids[0])) == uids[1:]


def test_the_fast_fetch_reading_agrees_with_imapclients_parser(imap_server, monkeypatch):
    """MailSession.fetch reads FETCH responses with its own two regexes; it must give what
    IMAPClient's full parser gives for the same messages (flags, keywords, dates in other
    zones, non-ASCII and binary bodies, a large message), on either server kind."""
    from datetime import datetime, timedelta, timezone

    from imapclient import IMAPClient

    from app.adapters.mail import client as client_module
    from app.adapters.mail.client import _flags
    from tests.mailboxes.mailgen import message

    user = f"fastparse{'c' if imap_server.condstore else 'x'}"
    imap_server.add_user(user)
    zone = timezone(timedelta(hours=-7, minutes=-30))
    raws = [
        ({"msg": message(1, subject="Grüße aus Zürich"), "flags": ["\\Seen", "$Label1"]}),
        ({"msg": message(2, attachment=bytes(range(256)) * 40), "flags": []}),
        ({"msg": message(3, size=400_000), "flags": ["\\Flagged", "\\Answered", "\\Draft"]}),
        (
            {
                "msg": message(4),
                "flags": ["\\Deleted"],
                "date": datetime(2023, 2, 3, 4, 5, 6, tzinfo=zone),
            }
        ),
    ]
    client = IMAPClient(imap_server.host, imap_server.port, ssl=False)
    client.login(user, imap_server.users[user])
    for m in raws:
        client.append("INBOX", m["msg"], m["flags"], m.get("date"))
    client.logout()
    with mail.connect(account_for(imap_server), user) as session:
        session.examine("INBOX")
        uids = session.uids()
        with monkeypatch.context() as m:
            # Dovecot's answers must take the fast path, not the fallback.
            m.setattr(client_module, "parse_fetch_response", None)
            fast = session.fetch(uids)
        items = ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"] + (["MODSEQ"] if session.condstore else [])
        full = session.client.fetch(uids, items)
    assert [m.uid for m in fast] == uids and len(uids) == 4
    for m in fast:
        d = full[m.uid]
        assert m.raw == d[b"BODY[]"]
        assert m.flags == _flags(d[b"FLAGS"])
        assert m.internal_date == d[b"INTERNALDATE"] and m.internal_date.utcoffset() is not None
        assert m.modseq == (int(d[b"MODSEQ"][0]) if session.condstore else None)
    assert fast[0].flags == ["$Label1", "\\Seen"]
    assert fast[3].internal_date == datetime(2023, 2, 3, 4, 5, 6, tzinfo=zone)


def test_fetch_responses_of_another_shape_go_to_imapclients_parser():
    from app.adapters.mail.client import _parse_bodies

    usual = [
        (b'1 (UID 7 FLAGS (\\Seen) INTERNALDATE "03-Feb-2023 04:05:06 +0100" BODY[] {3}', b"abc"),
        b")",
    ]
    ((uid, (body, flags, _when, modseq)),) = _parse_bodies(usual).items()
    assert (uid, body, flags, modseq) == (7, b"abc", ["\\Seen"], None)
    # an unsolicited FLAGS update between the messages, a quoted flag, BODY[] not last
    assert _parse_bodies([*usual, b"2 (FLAGS (\\Seen))"]) is None
    assert (
        _parse_bodies([(b'1 (UID 7 FLAGS ("odd") INTERNALDATE "x" BODY[] {3}', b"abc"), b")"])
        is None
    )
    assert _parse_bodies([(b"1 (BODY[] {3}", b"abc"), b" UID 7)"]) is None
