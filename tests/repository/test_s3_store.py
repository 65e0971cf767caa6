"""The S3 object store against real S3 servers on loopback (SeaweedFS and moto)."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import socket
import threading
from datetime import UTC, datetime, timedelta

import pytest

from app.repository.backend import ObjectMissing
from app.repository.s3 import (
    MULTIPART_THRESHOLD,
    ObjectLocked,
    S3Error,
    S3Location,
    S3Store,
)

MiB = 1024 * 1024


@pytest.fixture(params=["seaweedfs", "moto"])
def peer(request):
    return request.getfixturevalue("seaweedfs" if request.param == "seaweedfs" else "moto_s3")


def store_for(peer, bucket, prefix="", tmp_path=None, **kw) -> S3Store:
    return S3Store(
        S3Location(endpoint=kw.pop("endpoint", peer.endpoint), bucket=bucket, prefix=prefix),
        access_key=peer.access_key,
        secret_key=peer.secret_key,
        lock_dir=tmp_path,
        **kw,
    )


def test_objects_round_trip_and_missing_ones_say_so(peer, tmp_path):
    store = store_for(peer, peer.new_bucket(), "repo/", tmp_path)
    store.put("chunks/ab/one", [b"head-", bytearray(b"body"), memoryview(b"-tail")])
    assert store.get("chunks/ab/one") == b"head-body-tail"
    assert store.get_range("chunks/ab/one", 5, 4) == b"body"
    assert store.get_range("chunks/ab/one", 9, 100) == b"-tail"  # shorter at the end
    assert store.get_range("chunks/ab/one", 99, 4) == b""
    assert store.size("chunks/ab/one") == 14 and store.exists("chunks/ab/one")
    assert store.touch("chunks/ab/one") and not store.touch("chunks/ab/none")
    assert store.size("chunks/ab/none") is None
    with pytest.raises(ObjectMissing):
        store.get("chunks/ab/none")
    with pytest.raises(ObjectMissing):
        store.get_range("chunks/ab/none", 0, 1)
    store.delete("chunks/ab/one")
    assert not store.exists("chunks/ab/one")
    with pytest.raises(ObjectMissing):
        store.delete("chunks/ab/one")
    with pytest.raises(ValueError):
        store.put("../escape", b"x")


def test_a_large_object_goes_up_in_parts_and_comes_back_whole(seaweedfs, tmp_path):
    bucket = seaweedfs.new_bucket()
    store = store_for(seaweedfs, bucket, "", tmp_path)
    data = bytes(range(256)) * ((MULTIPART_THRESHOLD + 3 * MiB) // 256)
    store.put("packs/00/big", [data[: 5 * MiB], data[5 * MiB :]])
    assert store.get("packs/00/big") == data
    assert store.get_range("packs/00/big", 17 * MiB, 10) == data[17 * MiB : 17 * MiB + 10]
    head = seaweedfs.client().head_object(Bucket=bucket, Key="packs/00/big")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: a multipart upload
    uploads = seaweedfs.client().list_multipart_uploads(Bucket=bucket)
    assert not uploads.get("Uploads")


def test_listing_pages_through_everything_and_keeps_to_its_prefix(peer, tmp_path):
    bucket = peer.new_bucket()
    store = store_for(peer, bucket, "one/", tmp_path)
    other = store_for(peer, bucket, "two/", tmp_path)
    store.page_size = 4  # S3 pages 1000 keys; small pages show paging works
    keys = sorted(f"chunks/{i:04x}/{i:08x}" for i in range(11))
    for key in keys:
        store.put(key, key.encode())
    other.put("chunks/0000/else", b"x")
    store.put("index/p1", b"idx")
    assert sorted(store.list("chunks/")) == keys
    assert list(store.list("index/")) == ["index/p1"]
    assert list(other.list("")) == ["chunks/0000/else"]
    infos = {i.key: i for i in store.stat_all("chunks/00")}
    assert set(infos) == set(keys)
    assert infos[keys[0]].size == len(keys[0])
    assert abs(infos[keys[0]].modified - datetime.now(UTC).timestamp()) < 120


def test_deleting_in_a_versioned_bucket_frees_every_version(peer, tmp_path):
    bucket = peer.new_bucket()
    peer.client().put_bucket_versioning(
        Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    store = store_for(peer, bucket, "", tmp_path)
    store.put("chunks/aa/x", b"one")
    store.put("chunks/aa/x", b"two")
    store.delete("chunks/aa/x")
    left = peer.client().list_object_versions(Bucket=bucket)
    assert not left.get("Versions") and not left.get("DeleteMarkers")


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Forwards to the S3 server, but answers the first ``failures`` requests 503 SlowDown."""

    upstream: tuple[str, int]
    failures = 0
    seen = 0
    lock = threading.Lock()

    def _relay(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        with self.lock:
            type(self).seen += 1
            fail = type(self).failures > 0
            if fail:
                type(self).failures -= 1
        if fail:
            payload = b"<Error><Code>SlowDown</Code><Message>slow down</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        hop = ("expect", "connection", "keep-alive")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    def log_message(self, *args):
        pass


def test_throttling_and_server_errors_are_retried_with_back_off(moto_s3, tmp_path):
    host, port = moto_s3.endpoint.removeprefix("http://").split(":")
    handler = type("Flaky", (_Flaky,), {"upstream": (host, int(port)), "seen": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        bucket = moto_s3.new_bucket()
        store = store_for(moto_s3, bucket, "", tmp_path, endpoint=endpoint, attempts=3)
        handler.failures = 2
        store.put("config", b"survives two 503s")
        assert handler.seen == 3
        assert store.get("config") == b"survives two 503s"
        impatient = store_for(moto_s3, bucket, "", tmp_path, endpoint=endpoint, attempts=1)
        handler.failures = 1
        with pytest.raises(S3Error, match="SlowDown|503"):
            impatient.get("config")
    finally:
        server.shutdown()


def test_a_locked_object_cannot_be_deleted_or_shortened(seaweedfs, tmp_path):
    bucket = seaweedfs.new_bucket(lock=True)
    store = store_for(seaweedfs, bucket, "r/", tmp_path)
    assert store.lock_enabled() and store.versioned()
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    store.put("chunks/ab/locked", b"precious", retain_until=until)
    assert store.retention("chunks/ab/locked") == until
    with pytest.raises(ObjectLocked) as refused:
        store.delete("chunks/ab/locked")
    assert refused.value.until == until and until.strftime("%Y-%m-%d") in str(refused.value)
    # Extending moves the date on; asking for an earlier date changes nothing.
    assert store.extend_retention("chunks/ab/locked", until + timedelta(days=1))
    assert store.extend_retention("chunks/ab/locked", until)
    assert store.retention("chunks/ab/locked") == until + timedelta(days=1)
    # Directly through the S3 API: the locked version survives delete, overwrite, shortening.
    s3 = seaweedfs.client()
    version = s3.head_object(Bucket=bucket, Key="r/chunks/ab/locked")["VersionId"]
    with pytest.raises(s3.exceptions.ClientError):
        s3.delete_object(
            Bucket=bucket,
            Key="r/chunks/ab/locked",
            VersionId=version,
            BypassGovernanceRetention=True,
        )
    with pytest.raises(s3.exceptions.ClientError):
        s3.put_object_retention(
            Bucket=bucket,
            Key="r/chunks/ab/locked",
            VersionId=version,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - timedelta(days=1)},
        )
    s3.put_object(Bucket=bucket, Key="r/chunks/ab/locked", Body=b"ransom")
    old = s3.get_object(Bucket=bucket, Key="r/chunks/ab/locked", VersionId=version)
    assert old["Body"].read() == b"precious"
    unlocked = S3Store(
        S3Location(endpoint=seaweedfs.endpoint, bucket=seaweedfs.new_bucket()),
        access_key=seaweedfs.access_key,
        secret_key=seaweedfs.secret_key,
    )
    assert not unlocked.lock_enabled()


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, cert.fingerprint(hashes.SHA256()).hex()


def test_tls_is_verified_or_pinned_to_one_certificate(moto_s3, tmp_path):
    import ssl

    cert_file, key_file, thumbprint = _self_signed(tmp_path)
    host, port = moto_s3.endpoint.removeprefix("http://").split(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def pump(src, dst):
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def serve():
        # TLS in front of the plain S3 server: the client sees only this certificate.
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                tls = ctx.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()  # a client that refused the certificate
                continue
            up = socket.create_connection((host, int(port)))
            threading.Thread(target=pump, args=(tls, up), daemon=True).start()
            threading.Thread(target=pump, args=(up, tls), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    endpoint = f"https://127.0.0.1:{listener.getsockname()[1]}"
    bucket = moto_s3.new_bucket()

    def store(**tls):
        return S3Store(
            S3Location(endpoint=endpoint, bucket=bucket, **tls),
            access_key=moto_s3.access_key,
            secret_key=moto_s3.secret_key,
            lock_dir=tmp_path,
            attempts=1,
        )

    try:
        with pytest.raises(S3Error, match="(?i)certificate|ssl"):
            store().put("probe", b"x")  # self-signed: not trusted by the system's CAs
        store(cafile=str(cert_file)).put("probe", b"trusted by its CA file")
        pinned = store(trusted_thumbprint=":".join(thumbprint[i : i + 2] for i in range(0, 64, 2)))
        assert pinned.get("probe") == b"trusted by its CA file"
        with pytest.raises(S3Error, match="(?i)fingerprint"):
            store(trusted_thumbprint="00" * 32).get("probe")
    finally:
        stop.set()
        listener.close()
