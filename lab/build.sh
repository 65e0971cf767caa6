#!/usr/bin/env bash
# Builds the vSphere lab (lab/bin/bulwark-lab) offline from Debian's Go toolchain and
# govmomi 0.24 sources. Installs the two Debian packages first when they are missing (as root).
# Rebuilds only when a source file is newer than the binary. Prints the binary's path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/bin/bulwark-lab"
govmomi=/usr/share/gocode/src/github.com/vmware/govmomi

if ! command -v go >/dev/null 2>&1 || [ ! -d "$govmomi/simulator" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "lab/build.sh: needs golang-go and golang-github-vmware-govmomi-dev;" \
             "run as root or: apt-get install golang-go golang-github-vmware-govmomi-dev" >&2
        exit 1
    fi
    echo "lab/build.sh: installing golang-go and golang-github-vmware-govmomi-dev" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q golang-go golang-github-vmware-govmomi-dev >&2; then
        apt-get update -q >&2
        apt-get install -y -q golang-go golang-github-vmware-govmomi-dev >&2
    fi
fi

newest_source="$(find "$here" -maxdepth 1 -name '*.go' -newer "$out" 2>/dev/null | head -n 1 || true)"
if [ -x "$out" ] && [ -z "$newest_source" ]; then
    echo "$out"
    exit 0
fi

mkdir -p "$here/bin"
# Go's build cache lives under $HOME; where HOME is unset, a cache inside lab/bin (git-ignored)
# keeps the build working.
if [ -z "${GOCACHE:-}" ] && { [ -z "${HOME:-}" ] || [ ! -w "${HOME:-/nonexistent}" ]; }; then
    export GOCACHE="$here/bin/.gocache"
fi
cd "$here"
echo "lab/build.sh: building $out" >&2
GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= go build -o "$out.tmp" .
mv "$out.tmp" "$out"
echo "$out"
