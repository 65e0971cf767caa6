"""VM image data path: a VM snapshot's disks over vCenter's ``/folder`` into the repository,
and back to the datastore with ``/folder`` PUT.

Starts a vSphere lab whose Exchange disks hold ``--disk-mib`` MiB each, takes a snapshot of
EXCH-MBX03 (system disk on a VMDK, database and logs on virtual-mode RDMs), and measures, in
one run, what the VM-image strategy does per disk (``DatastoreFiles`` + ``write_image``):

1. the first full backup of the three disks (every block new);
2. a second full backup, as without changed block tracking (every block read, none new);
3. a restore of every disk as a new file (``read_image`` verified → ``/folder`` PUT), checked
   byte for byte against the original;
4. a whole-VM restore as a new VM: ``CreateVM_Task`` from the configuration captured at backup
   time, then every disk written from the repository into the new VM's folder (the data path
   of the ``whole_vm`` restore job), checked byte for byte; its rate and the ratio to the
   first backup's.

Memory is reported as the process's peak RSS. Both the lab and this process run on this
machine, so the lab's HTTPS serving competes for the same two cores.

    .venv/bin/python benchmarks/vm_image.py [--disk-mib 128]

Ends with exactly one line:

    RESULT disk_mib=... backup_mib_s=... second_backup_mib_s=... restore_mib_s=...
    whole_vm_restore_mib_s=... whole_vm_vs_backup=... peak_rss_mb=...
"""

from __future__ import annotations

import os
import sys

# This folder holds scripts named like standard modules (array.py, mailbox.py): run from the
# project root instead, so they do not shadow the standard library.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.path.insert(0, os.path.dirname(HERE))

import argparse  # noqa: E402
import hashlib  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from app.adapters import vsphere  # noqa: E402
from app.adapters.vsphere import vm_config  # noqa: E402
from app.adapters.vsphere.datastore_files import (  # noqa: E402
    DatastoreFiles,
    datacenter_path,
    flat_extent,
)
from app.adapters.vsphere.snapshot_disks import snapshot_disks  # noqa: E402
from app.repository.store import open_repository_at  # noqa: E402
from tests.lab_fixture import running_lab  # noqa: E402

SERVER = "EXCH-MBX03"


def backup(repo, files, disks) -> tuple[float, list, dict]:
    started = time.perf_counter()
    manifests, stats = [], {"new_chunks": 0, "read_bytes": 0}
    for disk in disks:
        size = files.size(disk.data_file)
        with files.open(disk.data_file, size) as source:
            manifest = repo.write_image(source, size=size, source_info={"disk": disk.key})
        repo.save_manifest(manifest)
        manifests.append(manifest)
        for key in stats:
            stats[key] += manifest.stats.get(key, 0)
    return time.perf_counter() - started, manifests, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--disk-mib", type=int, default=128)
    args = parser.parse_args()
    mib = 1024 * 1024

    with (
        running_lab(extra_args=["--disk-mib", str(args.disk_mib)]) as lab,
        tempfile.TemporaryDirectory(prefix="bulwark-bench-image-") as tmp,
    ):
        client = vsphere.connect(
            lab.host, lab.port, lab.username, lab.password, trusted_thumbprint=lab.thumbprint
        )
        vm = lab.exchange_vm(SERVER)
        snapshot = vsphere.create_snapshot(client, vm["moref"], "bench")
        files = DatastoreFiles(client, datacenter_path(client, vm["moref"]))
        disks = [d for d in snapshot_disks(client, snapshot) if d.in_snapshot]
        total = sum(files.size(d.data_file) for d in disks)
        repo = open_repository_at(Path(tmp) / "repo", create=True, encrypted=False)

        first_s, _, first = backup(repo, files, disks)
        second_s, manifests, second = backup(repo, files, disks)

        started = time.perf_counter()
        for disk, manifest in zip(disks, manifests, strict=True):
            target = flat_extent(disk.descriptor.sibling(f"bench-restore-{disk.key}.vmdk"))
            files.upload(target, repo.read_image(manifest, reuse_buffers=True), manifest.size)
        restore_s = time.perf_counter() - started

        # The whole VM as a new VM, from the configuration captured with the images.
        config = vm_config.read_config(client, vm["moref"], files)
        name = f"{SERVER}-bench"
        placement = vm_config.Placement(
            folder=config["folder"],
            resource_pool=config["resource_pool"],
            host=config["host"],
            datastore="VMFS-GEN-01",
            network=None,
        )
        by_key = {d.key: m for d, m in zip(disks, manifests, strict=True)}
        started = time.perf_counter()
        made = vm_config.create_vm(client, config, name, placement, mark="bench")
        for new in vm_config.new_disk_paths(config, name, placement.datastore):
            manifest = by_key[new.key]
            files.upload(
                flat_extent(new.descriptor),
                repo.read_image(manifest, reuse_buffers=True),
                manifest.size,
            )
        whole_s = time.perf_counter() - started
        home = (
            Path(
                next(d for d in lab.estate["datastores"] if d["name"] == "VMFS-GEN-01")[
                    "local_path"
                ]
            )
            / name
        )
        whole_ok = all(
            hashlib.sha256(
                (home / f"{new.descriptor.name[:-5]}-flat.vmdk").read_bytes()
            ).hexdigest()
            == next(d for d in vm["disks"] if d["key"] == new.key)["content_sha256"]
            for new in vm_config.new_disk_paths(config, name, placement.datastore)
        )
        assert whole_ok, "a disk of the restored VM differs"
        vsphere.destroy_vm(client, made)

        local = {d["key"]: d for d in vm["disks"] if d.get("local_path")}
        for disk in disks:
            restored = Path(local[disk.key]["local_path"]).parent / (
                f"bench-restore-{disk.key}-flat.vmdk"
            )
            digest = hashlib.sha256(restored.read_bytes()).hexdigest()
            assert digest == local[disk.key]["content_sha256"], f"disk {disk.key} differs"
        vsphere.remove_snapshot(client, snapshot)
        client.close()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [
        ("first full backup", first_s, first),
        ("second full backup (no CBT)", second_s, second),
        ("restore as new disks (PUT)", restore_s, None),
        ("whole VM as a new VM", whole_s, None),
    ]
    print(f"{len(disks)} disks of {SERVER}, {total / mib:.0f} MiB in all")
    print(f"{'step':32} {'seconds':>8} {'MiB/s':>8} {'new blocks':>10}")
    for name, seconds, stats in rows:
        new = str(stats["new_chunks"]) if stats else "-"
        print(f"{name:32} {seconds:8.2f} {total / mib / seconds:8.1f} {new:>10}")
    print(f"peak RSS {peak_mb:.0f} MB")
    print(
        f"RESULT disk_mib={args.disk_mib} backup_mib_s={total / mib / first_s:.1f} "
        f"second_backup_mib_s={total / mib / second_s:.1f} "
        f"restore_mib_s={total / mib / restore_s:.1f} "
        f"whole_vm_restore_mib_s={total / mib / whole_s:.1f} "
        f"whole_vm_vs_backup={first_s / whole_s:.2f} peak_rss_mb={peak_mb:.0f}"
    )


if __name__ == "__main__":
    main()
