#!/bin/sh
# Instance facts from an imdsfs mount, for a login banner (MOTD) or a shell prompt.
#
#   instance-facts.sh            # a few lines for /etc/update-motd.d/ or /etc/profile.d/
#   instance-facts.sh --prompt   # one short word for PS1: i-0123abcd@us-east-1a
#
# In ~/.bashrc: PS1='[\u@$(/usr/local/share/imdsfs/instance-facts.sh --prompt) \W]\$ '
# IMDS (default /run/imds) is where imdsfs is mounted. Reads only plain files: no tokens,
# no curl, no waiting (imdsfs caches these values for hours).
set -u
IMDS=${IMDS:-/run/imds}

# The value at $1, or "-" when this instance has none (no public IP, no tags, not mounted).
fact() { cat "$IMDS/$1" 2>/dev/null || printf -- -; }

if [ "${1:-}" = "--prompt" ]; then
    printf '%s@%s\n' "$(fact instance-id)" "$(fact placement/availability-zone)"
    exit 0
fi

printf 'instance   %s (%s, %s)\n' "$(fact instance-id)" "$(fact instance-type)" \
    "$(fact instance-life-cycle)"
printf 'name       %s\n' "$(fact tags/instance/Name)"
printf 'placement  %s\n' "$(fact placement/availability-zone)"
printf 'image      %s\n' "$(fact ami-id)"
printf 'addresses  %s private, %s public\n' "$(fact local-ipv4)" "$(fact public-ipv4)"
