#!/usr/bin/env bash
# Install what `make test` needs on a fresh Debian machine: the FUSE 3 runtime and headers
# (pyfuse3 ships only an sdist, so it compiles), a C compiler and Python headers, venv support.
# Idempotent: installs nothing when everything is already present.
set -euo pipefail

need=()
for pkg in fuse3 libfuse3-dev pkg-config attr jq; do  # attr: getfattr; jq: example scripts
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v gcc >/dev/null 2>&1 || need+=(gcc)
python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || need+=(python3-dev)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if ((${#need[@]})); then
    echo "bootstrap: installing ${need[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: need root to apt-get install ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
fi

# cloud-init's own readers, for the tests that check a real cloud-init agrees with the
# emulators and the mount. Unpacked from Debian's packages, never installed: an installed
# cloud-init would run at the machine's next boot.
CLOUD_INIT_ROOT=/var/cache/imdsfs-test/cloud-init
if [ ! -d "$CLOUD_INIT_ROOT/usr/lib/python3/dist-packages/cloudinit" ] \
    && [ ! -d /usr/lib/python3/dist-packages/cloudinit ] && [ "$(id -u)" -eq 0 ]; then
    echo "bootstrap: unpacking cloud-init into $CLOUD_INIT_ROOT (not installing it)" >&2
    download=$(mktemp -d)
    (
        cd "$download"
        chmod 0777 .  # apt-get download runs as _apt
        apt-get download -qq cloud-init python3-configobj 2>/dev/null \
            || { apt-get update -qq && apt-get download -qq cloud-init python3-configobj; }
        mkdir -p "$CLOUD_INIT_ROOT"
        for deb in ./*.deb; do dpkg-deb -x "$deb" "$CLOUD_INIT_ROOT"; done
    ) || echo "bootstrap: cloud-init could not be fetched; its tests will skip" >&2
    rm -rf "$download"
fi
