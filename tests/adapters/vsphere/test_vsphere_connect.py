"""Logging in to vCenter: credentials, reachability and TLS trust, against the lab."""

from __future__ import annotations

import socket

import pytest

from app.adapters.vsphere import (
    AuthenticationFailed,
    CertificateUntrusted,
    Unreachable,
    VSphereError,
    connect,
    fetch_thumbprint,
    format_thumbprint,
    normalize_thumbprint,
)
from tests.lab_fixture import Lab

pytestmark = pytest.mark.lab


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wrong_password_is_refused_without_echoing_it(lab: Lab) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        connect(
            lab.host,
            lab.port,
            lab.username,
            "Not-The-Password-42",
            trusted_thumbprint=lab.thumbprint,
        )
    message = str(caught.value)
    assert "vCenter rejected the user name or password" in message
    assert "Not-The-Password-42" not in message
    assert lab.password not in message


def test_nothing_listening_is_unreachable_naming_host_and_port() -> None:
    port = free_port()
    with pytest.raises(Unreachable) as caught:
        connect("127.0.0.1", port, "someone", "secret", timeout=5)
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_unknown_host_name_is_unreachable() -> None:
    with pytest.raises(Unreachable, match="could not be resolved"):
        connect("vcenter.invalid", 443, "someone", "secret", timeout=5)


def test_self_signed_certificate_is_untrusted_by_default_and_shows_its_thumbprint(
    lab: Lab,
) -> None:
    with pytest.raises(CertificateUntrusted) as caught:
        connect(lab.host, lab.port, lab.username, lab.password)
    assert caught.value.thumbprint == lab.thumbprint
    assert lab.thumbprint in str(caught.value)
    assert lab.password not in str(caught.value)


def test_fetch_thumbprint_shows_what_the_lab_presents(lab: Lab) -> None:
    assert fetch_thumbprint(lab.host, lab.port) == lab.thumbprint


def test_trusting_the_presented_thumbprint_connects(lab: Lab) -> None:
    with pytest.raises(CertificateUntrusted) as caught:
        connect(lab.host, lab.port, lab.username, lab.password)
    presented = caught.value.thumbprint
    assert presented is not None
    # Operators paste thumbprints in any form: without colons, lower case.
    pasted = presented.replace(":", "").lower()
    with connect(
        lab.host, lab.port, lab.username, lab.password, trusted_thumbprint=pasted
    ) as client:
        assert "vCenter" in client.about
        # Every connection of the session is pinned, not only the first one.
        for _ in range(3):
            assert client.content.rootFolder.name


def test_a_different_thumbprint_is_refused(lab: Lab) -> None:
    other = format_thumbprint("ab" * 32)
    with pytest.raises(CertificateUntrusted) as caught:
        connect(lab.host, lab.port, lab.username, lab.password, trusted_thumbprint=other)
    assert caught.value.thumbprint == lab.thumbprint
    assert "does not match" in str(caught.value)


def test_a_malformed_thumbprint_is_an_operator_error(lab: Lab) -> None:
    with pytest.raises(VSphereError, match="64 hexadecimal digits"):
        connect(lab.host, lab.port, lab.username, lab.password, trusted_thumbprint="AB:CD")


def test_verification_can_be_turned_off_explicitly(lab: Lab) -> None:
    with connect(lab.host, lab.port, lab.username, lab.password, verify_tls=False) as client:
        assert client.api_version


@pytest.mark.parametrize(
    "pasted",
    [
        "AB:" * 31 + "AB",
        "ab" * 32,
        " " + "Ab " * 32,
    ],
)
def test_thumbprints_are_normalised(pasted: str) -> None:
    assert normalize_thumbprint(pasted) == "ab" * 32
    assert format_thumbprint(pasted) == ":".join(["AB"] * 32)


@pytest.mark.parametrize("bad", ["", "AB:CD", "zz" * 32, "ab" * 20])
def test_non_sha256_thumbprints_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_thumbprint(bad)
