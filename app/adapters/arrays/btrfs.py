"""The reference array: a Linux box with a btrfs filesystem, as a real array behaves.

Layout under the array's path (``options.path`` of its connection)::

    groups/<group>/             a subvolume per consistency group (database LUN + log LUN)
    groups/<group>/naa.6001405… one sparse file per volume, named by its NAA id
    snapshots/<group>/<name>/   read-only snapshots of the group's subvolume
    snapshots/<group>/<name>.json   when it was taken and what it holds
    clones/<name>/              writable snapshots of a snapshot, volumes renamed to new NAA ids

A snapshot of a subvolume is atomic for every file in it, instant and copy-on-write, which is
what makes a group snapshot consistent across the database and log LUNs. Reverting a whole
group swaps a writable snapshot into the group's place with one ``renameat2(RENAME_EXCHANGE)``;
reverting single volumes reflinks their files back. Changed blocks between two snapshots come
from comparing which physical extents back each volume (see ``extents``).

The same box serves its volumes to ESXi over iSCSI with LIO (``targetcli`` fileio
backstores, one per volume file); see docs/arrays.md.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from app.adapters.arrays import extents
from app.adapters.arrays.driver import (
    ArrayDriver,
    ArrayError,
    ArraySnapshot,
    ArrayUnavailable,
    Capabilities,
    InvalidName,
    NotSupported,
    OutOfSpace,
    SnapshotNotFound,
    Volume,
    VolumeNotFound,
    check_name,
    derived_naa,
    normalise_naa,
)

FICLONE = 0x40049409
RENAME_EXCHANGE = 2
AT_FDCWD = -100
BTRFS = "btrfs"
COMMAND_TIMEOUT_S = 60
CLONE_META = ".clone.json"
_libc = ctypes.CDLL(None, use_errno=True)


def mount_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) of the filesystem holding ``path``."""
    target = os.path.realpath(path)
    best = ("/", "")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].replace("\\040", " ")
            fstype = fields[fields.index("-") + 1]
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):
                best = (point, fstype)
    return best


class BtrfsArray(ArrayDriver):
    driver_name = "btrfs"

    def __init__(self, path: str | Path, name: str | None = None):
        self.root = Path(path)
        self._name = name or str(self.root)

    @property
    def label(self) -> str:
        return f"'{self._name}'"

    # -- plumbing -------------------------------------------------------------------------
    def _btrfs(self, action: str, *args: str) -> str:
        try:
            done = subprocess.run(
                [BTRFS, *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
            )
        except FileNotFoundError as exc:
            raise ArrayUnavailable(
                "btrfs-progs is not installed on this proxy (the 'btrfs' command is missing)"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise ArrayError(
                f"array {self.label} did not {action} within {COMMAND_TIMEOUT_S} s"
            ) from exc
        if done.returncode != 0:
            raise self._error(action, done.stderr.strip().splitlines()[-1:] or [""])
        return done.stdout

    def _error(self, action: str, lines: list[str]) -> ArrayError:
        reason = (lines[0] if lines else "").removeprefix("ERROR: ").strip()
        low = reason.lower()
        if "no space" in low or "quota" in low:
            return OutOfSpace(f"array {self.label} is full: could not {action} ({reason})")
        if "permission" in low or "not permitted" in low:
            return ArrayUnavailable(
                f"array {self.label}: not allowed to {action} ({reason}); the proxy must run as "
                "root on the array's host"
            )
        return ArrayError(f"array {self.label} could not {action}: {reason or 'unknown error'}")

    def _os_error(self, action: str, exc: OSError) -> ArrayError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return OutOfSpace(f"array {self.label} is full: could not {action}")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return ArrayUnavailable(f"array {self.label}: not allowed to {action} ({exc.strerror})")
        return ArrayError(f"array {self.label} could not {action}: {exc.strerror or exc}")

    def _dir(self, *parts: str) -> Path:
        d = self.root.joinpath(*parts)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _group_path(self, group: str) -> Path:
        return self.root / "groups" / check_name("consistency group", group)

    def _snapshot_path(self, snapshot_id: str) -> tuple[str, str, Path]:
        group, sep, name = snapshot_id.partition("@")
        try:
            check_name("consistency group", group)
            check_name("snapshot", name)
        except InvalidName as exc:
            raise SnapshotNotFound(self.label, snapshot_id) from exc
        if not sep:
            raise SnapshotNotFound(self.label, snapshot_id)
        return group, name, self.root / "snapshots" / group / name

    def _existing_snapshot(self, snapshot_id: str) -> tuple[str, str, Path]:
        group, name, path = self._snapshot_path(snapshot_id)
        if not path.is_dir():
            raise SnapshotNotFound(self.label, snapshot_id)
        return group, name, path

    @staticmethod
    def _volume_files(directory: Path) -> list[Path]:
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.iterdir() if p.name.startswith("naa.") and p.is_file())

    # -- connection -----------------------------------------------------------------------
    def check(self) -> str:
        self._require_root()
        point, fstype = mount_of(self.root)
        if fstype != "btrfs":
            raise ArrayUnavailable(
                f"array path {self.root} is on {fstype or 'an unknown filesystem'} "
                f"(mounted at {point}), not btrfs"
            )
        caps = self.capabilities()
        volumes = self.list_volumes()
        return (
            f"btrfs array at {self.root}: {len(volumes)} volume(s), "
            f"{caps.used_bytes / 2**30:.1f} GiB of {caps.total_bytes / 2**30:.1f} GiB used"
        )

    def capabilities(self) -> Capabilities:
        self._require_root()
        try:
            st = os.statvfs(self.root)
        except OSError as exc:
            raise self._os_error("read its space", exc) from exc
        total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        return Capabilities(
            driver=self.driver_name,
            consistency_groups=True,
            clone=True,
            revert=True,
            changed_blocks=True,
            read_snapshots=True,
            total_bytes=total,
            used_bytes=total - st.f_bfree * st.f_frsize,
            free_bytes=free,
        )

    # -- volumes --------------------------------------------------------------------------
    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise ArrayUnavailable(f"array path {self.root} does not exist on this proxy")

    def list_volumes(self) -> list[Volume]:
        self._require_root()
        found: list[Volume] = []
        groups = self.root / "groups"
        for gdir in sorted(groups.iterdir()) if groups.is_dir() else []:
            if gdir.name.startswith("."):
                continue  # a revert in progress
            for f in self._volume_files(gdir):
                st = f.stat()
                found.append(Volume(f.name, gdir.name, st.st_size, st.st_blocks * 512))
        clones = self.root / "clones"
        for cdir in sorted(clones.iterdir()) if clones.is_dir() else []:
            meta = self._clone_meta(cdir)
            for f in self._volume_files(cdir):
                st = f.stat()
                found.append(
                    Volume(
                        f.name,
                        cdir.name,
                        st.st_size,
                        st.st_blocks * 512,
                        clone_of=meta.get("snapshot"),
                        source_naa_id=meta.get("sources", {}).get(f.name),
                    )
                )
        return found

    def _find_volume(self, naa_id: str) -> Path:
        naa = normalise_naa(naa_id)
        for base in ("groups", "clones"):
            d = self.root / base
            for sub in d.iterdir() if d.is_dir() else []:
                if not sub.name.startswith(".") and (sub / naa).is_file():
                    return sub / naa
        raise VolumeNotFound(self.label, naa)

    def create_volume(self, group: str, naa_id: str, size_bytes: int) -> Volume:
        naa = normalise_naa(naa_id)
        if size_bytes <= 0 or size_bytes % 512:
            raise ArrayError("a volume's size must be a positive multiple of 512 bytes")
        if any(v.naa_id == naa for v in self.list_volumes()):
            raise ArrayError(f"array {self.label} already has a volume {naa}")
        gpath = self._group_path(group)
        if not gpath.exists():
            self._dir("groups")
            self._btrfs(f"create consistency group {group}", "subvolume", "create", str(gpath))
        try:
            with open(gpath / naa, "xb") as f:
                f.truncate(size_bytes)  # thin: sparse until written
        except OSError as exc:
            raise self._os_error(f"create volume {naa}", exc) from exc
        return Volume(naa, group, size_bytes, 0)

    def delete_volume(self, naa_id: str) -> None:
        try:
            path = self._find_volume(naa_id)
        except VolumeNotFound:
            return
        path.unlink(missing_ok=True)

    # -- snapshots ------------------------------------------------------------------------
    def create_snapshot(self, naa_ids: list[str], name: str) -> ArraySnapshot:
        check_name("snapshot", name)
        if not naa_ids:
            raise ArrayError("name at least one volume to snapshot")
        paths = [self._find_volume(n) for n in naa_ids]
        groups = {p.parent for p in paths}
        if len(groups) != 1 or paths[0].parent.parent.name != "groups":
            raise NotSupported(
                f"volumes {', '.join(naa_ids)} are not in one consistency group on array "
                f"{self.label}; put the database and log LUNs in the same group"
            )
        gpath = paths[0].parent
        group = gpath.name
        target = self._dir("snapshots", group) / name
        if target.exists():
            raise ArrayError(f"array {self.label} already has a snapshot {group}@{name}")
        self._btrfs(
            f"snapshot consistency group {group}",
            "subvolume",
            "snapshot",
            "-r",
            str(gpath),
            str(target),
        )
        created = datetime.now(UTC)
        vols = tuple(f.name for f in self._volume_files(target))
        size = sum((target / v).stat().st_size for v in vols)
        meta = {"created_at": created.isoformat(), "volumes": list(vols), "size_bytes": size}
        tmp = target.with_name(f".{name}.json.tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(target.with_name(f"{name}.json"))
        return ArraySnapshot(f"{group}@{name}", group, name, created, size, vols)

    def delete_snapshot(self, snapshot_id: str) -> None:
        _, name, path = self._snapshot_path(snapshot_id)
        if path.is_dir():
            self._btrfs(f"delete snapshot {snapshot_id}", "subvolume", "delete", str(path))
        path.with_name(f"{name}.json").unlink(missing_ok=True)

    def list_snapshots(self, group: str | None = None) -> list[ArraySnapshot]:
        self._require_root()
        base = self.root / "snapshots"
        gdirs = (
            [base / check_name("consistency group", group)]
            if group
            else (sorted(base.iterdir()) if base.is_dir() else [])
        )
        found = []
        for gdir in gdirs:
            if not gdir.is_dir():
                continue
            for sdir in sorted(p for p in gdir.iterdir() if p.is_dir()):
                found.append(self._read_snapshot(gdir.name, sdir))
        return sorted(found, key=lambda s: (s.created_at, s.id))

    def _read_snapshot(self, group: str, sdir: Path) -> ArraySnapshot:
        meta_path = sdir.with_name(f"{sdir.name}.json")
        try:
            meta = json.loads(meta_path.read_text())
            created = datetime.fromisoformat(meta["created_at"])
            vols, size = tuple(meta["volumes"]), int(meta["size_bytes"])
        except (OSError, ValueError, KeyError):
            # Taken, but the worker stopped before writing its metadata.
            created = datetime.fromtimestamp(sdir.stat().st_mtime, UTC)
            vols = tuple(f.name for f in self._volume_files(sdir))
            size = sum((sdir / v).stat().st_size for v in vols)
        return ArraySnapshot(f"{group}@{sdir.name}", group, sdir.name, created, size, vols)

    # -- clones ---------------------------------------------------------------------------
    def _clone_meta(self, cdir: Path) -> dict:
        try:
            return json.loads((cdir / CLONE_META).read_text())
        except (OSError, ValueError):
            return {}

    def clone_snapshot(self, snapshot_id: str, name: str) -> list[Volume]:
        check_name("clone", name)
        _, _, spath = self._existing_snapshot(snapshot_id)
        target = self._dir("clones") / name
        if target.exists():
            raise ArrayError(f"array {self.label} already has a clone named {name}")
        self._btrfs(
            f"clone snapshot {snapshot_id}", "subvolume", "snapshot", str(spath), str(target)
        )
        sources = {}
        # New identities: ESXi must never see two LUNs with one NAA id.
        for f in self._volume_files(target):
            new = derived_naa(f"clone/{name}/{f.name}")
            f.rename(target / new)
            sources[new] = f.name
        (target / CLONE_META).write_text(json.dumps({"snapshot": snapshot_id, "sources": sources}))
        return [v for v in self.list_volumes() if v.group == name and v.clone_of == snapshot_id]

    def delete_clone(self, name: str) -> None:
        path = self.root / "clones" / check_name("clone", name)
        if path.is_dir():
            self._btrfs(f"delete clone {name}", "subvolume", "delete", str(path))

    # -- revert ---------------------------------------------------------------------------
    def revert_to_snapshot(self, snapshot_id: str, naa_ids: list[str] | None = None) -> None:
        group, _, spath = self._existing_snapshot(snapshot_id)
        gpath = self._group_path(group)
        if not gpath.is_dir():
            raise ArrayError(f"consistency group {group} no longer exists on array {self.label}")
        if naa_ids is None:
            self._swap_group(snapshot_id, spath, gpath)
            return
        for naa in map(normalise_naa, naa_ids):
            if not (spath / naa).is_file():
                raise VolumeNotFound(self.label, f"{naa} in snapshot {snapshot_id}")
            tmp = gpath / f".{naa}.revert-{uuid.uuid4().hex[:8]}"
            try:
                with open(spath / naa, "rb") as src, open(tmp, "xb") as dst:
                    fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())  # shares extents: instant
                os.replace(tmp, gpath / naa)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise self._os_error(f"revert volume {naa}", exc) from exc

    def _swap_group(self, snapshot_id: str, spath: Path, gpath: Path) -> None:
        fresh = gpath.with_name(f".{gpath.name}.revert-{uuid.uuid4().hex[:8]}")
        self._btrfs(f"revert to {snapshot_id}", "subvolume", "snapshot", str(spath), str(fresh))
        # One atomic exchange: at every instant the group's path holds a whole subvolume.
        rc = _libc.renameat2(AT_FDCWD, bytes(fresh), AT_FDCWD, bytes(gpath), RENAME_EXCHANGE)
        if rc != 0:
            err = ctypes.get_errno()
            self._btrfs("discard a failed revert", "subvolume", "delete", str(fresh))
            raise self._os_error(f"revert to {snapshot_id}", OSError(err, os.strerror(err)))
        # ``fresh`` now names the replaced data.
        self._btrfs("remove the replaced data", "subvolume", "delete", str(fresh))

    # -- reading --------------------------------------------------------------------------
    def open_snapshot_volume(self, snapshot_id: str, naa_id: str) -> BinaryIO:
        _, _, spath = self._existing_snapshot(snapshot_id)
        naa = normalise_naa(naa_id)
        if not (spath / naa).is_file():
            raise VolumeNotFound(self.label, f"{naa} in snapshot {snapshot_id}")
        return open(spath / naa, "rb")  # noqa: SIM115 - the caller closes it

    def open_volume(self, naa_id: str, *, write: bool = False) -> BinaryIO:
        path = self._find_volume(naa_id)
        return open(path, "r+b" if write else "rb")  # noqa: SIM115

    def changed_areas(self, older_id: str, newer_id: str, naa_id: str) -> list[extents.Area]:
        naa = normalise_naa(naa_id)
        g1, _, old = self._existing_snapshot(older_id)
        g2, _, new = self._existing_snapshot(newer_id)
        if g1 != g2:
            raise NotSupported(f"snapshots {older_id} and {newer_id} are of different groups")
        for p in (old / naa, new / naa):
            if not p.is_file():
                raise VolumeNotFound(self.label, f"{naa} in snapshot {p.parent.name}")
        try:
            return extents.changed(str(old / naa), str(new / naa))
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY):
                raise NotSupported(f"array {self.label} cannot map extents here") from exc
            raise self._os_error("compare snapshots", exc) from exc

    def allocated_areas(self, snapshot_id: str, naa_id: str) -> list[extents.Area] | None:
        _, _, spath = self._existing_snapshot(snapshot_id)
        try:
            return extents.allocated(str(spath / normalise_naa(naa_id)))
        except OSError:
            return None
