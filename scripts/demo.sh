#!/usr/bin/env bash
# make demo: the local IMDS emulator, imdsfs mounted on it in a temporary directory, a look at
# the tree, then a clean unmount. Runs anywhere with FUSE; no cloud needed.
# PROVIDER=gce make demo shows Google Compute Engine's tree instead of EC2's; PROVIDER=azure
# shows Azure's, PROVIDER=openstack OpenStack's (Nova's EC2-style tree, and openstack/).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PROVIDER=${PROVIDER:-ec2}

workdir=$(mktemp -d /tmp/imdsfs-demo.XXXXXX)
mnt="$workdir/imds"
mkdir "$mnt"
emulator_pid=""

cleanup() {
    if mountpoint -q "$mnt"; then fusermount3 -u "$mnt" || fusermount3 -u -z "$mnt"; fi
    if [ -n "$emulator_pid" ]; then kill "$emulator_pid" 2>/dev/null || true; wait "$emulator_pid" 2>/dev/null || true; fi
    rm -rf "$workdir"
}
trap cleanup EXIT

# The emulator prints its URL as its first line of output.
coproc EMULATOR { exec "$PY" -m imdsfs emulate --provider "$PROVIDER" --port 0 2>"$workdir/emulator.log"; }
emulator_pid=$EMULATOR_PID
read -r url <&"${EMULATOR[0]}"
echo "== $PROVIDER emulator serving its metadata service at $url"

"$PY" -m imdsfs mount --provider "$PROVIDER" --endpoint "$url" "$mnt"
echo "== mounted at $mnt"

run() { echo; echo "\$ $*"; "$@"; }
cd "$mnt"
run ls -l
case "$PROVIDER" in
ec2)
    run cat instance-id; echo
    run cat placement/region; echo
    run cat dynamic/instance-identity/document; echo
    run ls -l iam/security-credentials
    ;;
gce)
    run cat instance/id; echo
    run cat instance/zone; echo
    run ls -l instance/service-accounts/default
    run cat instance/network-interfaces/0/ip; echo
    ;;
azure)
    run cat instance/compute/vmId; echo
    run cat instance/compute/location; echo
    run ls -l instance/network/interface/0/ipv4/ipAddress/0
    run cat scheduledevents; echo
    ;;
openstack)
    run cat instance-id; echo
    run cat placement/availability-zone; echo
    run ls -l openstack
    run cat openstack/network_data.json; echo
    ;;
esac
cd /
fusermount3 -u "$mnt"
echo
echo "== unmounted cleanly"
