#!/bin/sh
# Watch for a spot interruption notice and drain before the instance goes away.
#
#   spot-watcher.sh [-i SECONDS] -- DRAIN-COMMAND [ARGS...]
#
# Polls $IMDS/spot/instance-action (default mount /run/imds, every 5 s). The file appears
# about two minutes before EC2 stops or terminates a spot instance. When it does, this logs
# the notice, runs DRAIN-COMMAND once with SPOT_ACTION and SPOT_TIME in its environment, and
# exits with the drain command's status. Run it as a service: Restart=no, since the drain
# is a one-time event. imdsfs re-reads spot/ every 5 s (see --ttl), so polling is cheap.
set -u
IMDS=${IMDS:-/run/imds}
interval=5

usage() { echo "usage: $0 [-i SECONDS] -- DRAIN-COMMAND [ARGS...]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case $1 in
        -i) [ $# -ge 2 ] || usage; interval=$2; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || usage

notice="$IMDS/spot/instance-action"
# ENOENT is the normal answer (no notice); EIO while IMDS is unreachable: keep watching.
until action=$(cat "$notice" 2>/dev/null); do
    sleep "$interval"
done

# {"action": "terminate", "time": "2024-05-01T12:02:00Z"}, without needing jq.
SPOT_ACTION=$(printf '%s' "$action" | sed -n 's/.*"action" *: *"\([^"]*\)".*/\1/p')
SPOT_TIME=$(printf '%s' "$action" | sed -n 's/.*"time" *: *"\([^"]*\)".*/\1/p')
export SPOT_ACTION SPOT_TIME
echo "spot-watcher: interruption notice: $SPOT_ACTION at $SPOT_TIME; draining" >&2
"$@"
status=$?
echo "spot-watcher: drain command exited $status" >&2
exit "$status"
