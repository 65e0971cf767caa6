"""How bytes are sealed in the repository: zstd compression and optional AES-256-GCM.

One flags byte leads every stored object: bit 0 = zstd-compressed, bit 1 = encrypted. An
encrypted object carries a fresh random 96-bit nonce; the associated data binds it to its
name (a chunk's digest, a manifest's id), so objects swapped on disk do not decrypt.

Random nonces, not nonces derived from the content: zstd output may differ between library
versions for the same plain data, and a derived nonce would then be reused with different
plaintext, which breaks GCM. Each chunk is encrypted once (it is stored once), so the
number of encryptions per key stays far below GCM's random-nonce bound of 2**32.
"""

from __future__ import annotations

import os
import threading

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.security.secrets import derive_key

COMPRESSED = 0x01
ENCRYPTED = 0x02
_NONCE = 12
ZSTD_LEVEL = 1  # fast; disk images are mostly zero, random or text-like regions
# Up to this size (mail messages) the repository key's cached AESGCM seals and opens in one
# call; building a Cipher costs more than encrypting a small message. Larger objects (disk
# blocks) go through a per-thread buffer instead of a fresh allocation each.
_SMALL = 256 * 1024
OPEN_SLACK = 64
"""Bytes beyond the plain size that :meth:`Codec.open_into` needs in its buffer (AES
``update_into`` wants up to a cipher block more than it writes)."""


class SealBroken(Exception):  # noqa: N818
    """The stored object does not open: damaged, swapped, or the wrong key."""


class RepositoryKeys:
    """The keys derived from one repository key: encryption and digest keying."""

    def __init__(self, repository_key: bytes):
        self.chunk_key = derive_key(repository_key, "repository-chunks")
        self.aead = AESGCM(self.chunk_key)
        # Keyed digests: chunk names do not reveal the hash of known plain data.
        self.digest_key = derive_key(repository_key, "repository-digests")


class Codec:
    def __init__(self, keys: RepositoryKeys | None):
        self.keys = keys
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        return c

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def _buffer(self, size: int) -> bytearray:
        """This thread's scratch buffer: no fresh 4 MiB allocation (and page faults) per
        chunk, which costs more than the cipher itself when threads run side by side."""
        buf = getattr(self._local, "buf", None)
        if buf is None or len(buf) < size:
            buf = self._local.buf = bytearray(max(size, 4 * 1024 * 1024 + 64))
        return buf

    def seal_parts(self, data, name: str) -> list:
        """The sealed object as parts to write one after the other (no concatenation).

        An encrypted object's ciphertext lives in this thread's buffer: write the parts
        before this thread seals anything else.
        """
        flags = 0
        body = self._compressor().compress(data)
        if len(body) < len(data):
            flags |= COMPRESSED
        else:
            body = data  # incompressible: store as is, reading it back costs nothing
        if self.keys is None:
            return [bytes([flags]), body]
        nonce = os.urandom(_NONCE)
        if len(body) <= _SMALL:
            sealed = self.keys.aead.encrypt(nonce, body, name.encode())
            return [bytes([flags | ENCRYPTED]), nonce, sealed]
        encryptor = Cipher(algorithms.AES(self.keys.chunk_key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(name.encode())
        buf = self._buffer(len(body) + 16)
        n = encryptor.update_into(body, buf)
        encryptor.finalize()
        # The same bytes as AESGCM.encrypt: ciphertext, then the 16-byte tag.
        return [bytes([flags | ENCRYPTED]), nonce, memoryview(buf)[:n], encryptor.tag]

    def seal(self, data, name: str) -> bytes:
        return b"".join(self.seal_parts(data, name))

    def open(self, stored: bytes, name: str) -> bytes:
        if not stored:
            raise SealBroken("empty object")
        flags, body = stored[0], memoryview(stored)[1:]
        if flags & ~(COMPRESSED | ENCRYPTED):
            raise SealBroken(f"unknown flags {flags:#x}")
        if flags & ENCRYPTED:
            if self.keys is None:
                raise SealBroken("object is encrypted but the repository has no key")
            if len(body) < _NONCE + 16:
                raise SealBroken("too short")
            if len(body) <= _SMALL + _NONCE + 16:
                try:
                    body = self.keys.aead.decrypt(body[:_NONCE], body[_NONCE:], name.encode())
                except InvalidTag as exc:
                    raise SealBroken("authentication failed") from exc
                if not flags & COMPRESSED:
                    return body
            else:
                body = self._open_large(body, flags, name)
                if not flags & COMPRESSED:
                    return body
        elif self.keys is not None:
            raise SealBroken("object is not encrypted in an encrypted repository")
        if flags & COMPRESSED:
            try:
                return self._decompressor().decompress(body)
            except zstandard.ZstdError as exc:
                raise SealBroken(f"zstd: {exc}") from exc
        return bytes(body)

    def open_into(self, stored, name: str, out: bytearray) -> memoryview:
        """Open ``stored`` into ``out``, without allocating: the plain data as a view of
        ``out``, which must hold the plain data plus :data:`OPEN_SLACK` bytes. A restore
        reads ahead into a bounded pool of such buffers instead of a fresh block each."""
        view = memoryview(stored)
        flags, body = view[0], view[1:]
        if flags & ~(COMPRESSED | ENCRYPTED):
            raise SealBroken(f"unknown flags {flags:#x}")
        if flags & ENCRYPTED:
            if self.keys is None:
                raise SealBroken("object is encrypted but the repository has no key")
            if len(body) < _NONCE + 16:
                raise SealBroken("too short")
            if len(body) <= _SMALL + _NONCE + 16:  # small: one AESGCM call, then as below
                try:
                    body = memoryview(
                        self.keys.aead.decrypt(body[:_NONCE], body[_NONCE:], name.encode())
                    )
                except InvalidTag as exc:
                    raise SealBroken("authentication failed") from exc
                return self._plain_into(body, flags, out)
            nonce, tag = bytes(body[:_NONCE]), bytes(body[-16:])
            decryptor = Cipher(
                algorithms.AES(self.keys.chunk_key), modes.GCM(nonce, tag)
            ).decryptor()
            decryptor.authenticate_additional_data(name.encode())
            # Compressed: the ciphertext opens into this thread's scratch, zstd reads it from
            # there into ``out``; stored as is: straight into ``out``.
            target = self._buffer(len(body)) if flags & COMPRESSED else out
            if len(target) < len(body) - _NONCE - 16 + OPEN_SLACK:
                raise SealBroken("larger than the buffer it opens into")
            n = decryptor.update_into(body[_NONCE:-16], target)
            try:
                decryptor.finalize()
            except InvalidTag as exc:
                raise SealBroken("authentication failed") from exc
            body = memoryview(target)[:n]
            if not flags & COMPRESSED:
                return body
        elif self.keys is not None:
            raise SealBroken("object is not encrypted in an encrypted repository")
        return self._plain_into(body, flags, out)

    def _plain_into(self, body: memoryview, flags: int, out: bytearray) -> memoryview:
        result = memoryview(out)
        if not flags & COMPRESSED:
            if len(body) > len(out):
                raise SealBroken("larger than the buffer it opens into")
            out[: len(body)] = body
            return result[: len(body)]
        reader = self._decompressor().stream_reader(body, read_across_frames=False)
        done = 0
        try:
            while done < len(out):
                got = reader.readinto(result[done:])
                if not got:
                    break
                done += got
            if done == len(out) and reader.read(1):
                raise SealBroken("larger than the buffer it opens into")
        except zstandard.ZstdError as exc:
            raise SealBroken(f"zstd: {exc}") from exc
        # A truncated or altered frame that still decodes gives other bytes: the caller's
        # digest check refuses them.
        return result[:done]

    def _open_large(self, body: memoryview, flags: int, name: str):
        """Decrypt a large object without a fresh allocation when it is compressed (the
        scratch buffer feeds zstd); stored as is, straight into the result."""
        nonce, tag = bytes(body[:_NONCE]), bytes(body[-16:])
        decryptor = Cipher(algorithms.AES(self.keys.chunk_key), modes.GCM(nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(name.encode())
        if flags & COMPRESSED:
            buf = self._buffer(len(body))
        else:
            buf = bytearray(len(body) - _NONCE - 16 + 15)
        n = decryptor.update_into(body[_NONCE:-16], buf)
        try:
            decryptor.finalize()
        except InvalidTag as exc:
            raise SealBroken("authentication failed") from exc
        if not flags & COMPRESSED:
            del buf[n:]
            return buf
        return memoryview(buf)[:n]


def wrap_key(root_key: bytes, repository_key: bytes, repository_uuid: str) -> bytes:
    """Seal the repository key with the service secret (``BULWARK_SECRET_KEY``)."""
    nonce = os.urandom(_NONCE)
    aead = AESGCM(derive_key(root_key, "repository-key-wrap"))
    return nonce + aead.encrypt(nonce, repository_key, repository_uuid.encode())


def unwrap_key(root_key: bytes, wrapped: bytes, repository_uuid: str) -> bytes:
    aead = AESGCM(derive_key(root_key, "repository-key-wrap"))
    try:
        return aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], repository_uuid.encode())
    except InvalidTag as exc:
        raise SealBroken(
            "the repository key does not open with this BULWARK_SECRET_KEY "
            "(the key changed or the repository belongs to another installation)"
        ) from exc
