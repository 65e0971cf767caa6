#!/usr/bin/env bash
# Installs the Debian packages the test suite's real peers need, only when missing.
# Run as root (CI is root). Without root, it says what is missing and fails.
set -euo pipefail

need=()
command -v go >/dev/null || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/vmware/govmomi/simulator ] || need+=(golang-github-vmware-govmomi-dev)
[ -x /usr/bin/chromium ] || need+=(chromium)
# Fonts make screenshots readable; chromium pulls a minimal set otherwise.
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
# The mailbox tests' IMAP server and the reference array's filesystem.
command -v dovecot >/dev/null || need+=(dovecot-imapd)
command -v mkfs.btrfs >/dev/null || need+=(btrfs-progs)
# benchmarks/repository.py measures Bulwark's repository against restic and borg.
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup)

pg_answers() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }
if ! pg_answers; then
  if ! command -v pg_ctlcluster >/dev/null; then need+=(postgresql); fi
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${need[*]} (run 'sudo $0' or install them)" >&2
    exit 1
  fi
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! pg_answers && [ "$(id -u)" = 0 ]; then
  # A freshly installed cluster: start it and allow local trust auth like CI's server.
  version=$(ls /etc/postgresql | sort -V | tail -1)
  conf=/etc/postgresql/$version/main/pg_hba.conf
  sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/; s/^(local\s+all\s+postgres\s+)\S+/\1trust/' "$conf"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 30); do pg_answers && break; sleep 1; done
fi
pg_answers || { echo "PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }
