#!/usr/bin/env bash
# What `make systemd-test` needs on the host besides scripts/bootstrap.sh's packages:
# debootstrap (the container's Debian), systemd-nspawn (systemd-container) and nsenter
# (util-linux). Idempotent: installs nothing when everything is present. No recommends:
# systemd-container's would add libnss-mymachines to the host's /etc/nsswitch.conf.
set -euo pipefail

need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)

if ((${#need[@]})); then
    echo "systemd-test: installing ${need[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then
        echo "systemd-test: need root to apt-get install ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
