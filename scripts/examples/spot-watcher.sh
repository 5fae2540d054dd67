#!/bin/sh
# Wait for a spot interruption notice and drain before the instance goes away.
#
#   spot-watcher.sh -- DRAIN-COMMAND [ARGS...]
#
# Waits, with `imdsfs wait`, for $IMDS/spot/instance-action (default mount /run/imds): the
# file appears about two minutes before EC2 stops or terminates a spot instance. No loop
# here: the mount asks IMDS for the notice every 5 s while anyone waits (however many do),
# and wakes the wait when it appears. Then this logs the notice, runs DRAIN-COMMAND once
# with SPOT_ACTION and SPOT_TIME in its environment, and exits with the drain command's
# status. Run it as a service: Restart=no, since the drain is a one-time event.
set -u
IMDS=${IMDS:-/run/imds}
IMDSFS=${IMDSFS:-imdsfs}

usage() { echo "usage: $0 -- DRAIN-COMMAND [ARGS...]" >&2; exit 2; }
[ "${1:-}" = "--" ] && shift
[ $# -ge 1 ] || usage

if ! action=$("$IMDSFS" wait "$IMDS/spot/instance-action"); then
    echo "spot-watcher: cannot wait for the notice (is $IMDS an imdsfs mount?)" >&2
    exit 2
fi

# {"action": "terminate", "time": "2024-05-01T12:02:00Z"}, without needing jq.
SPOT_ACTION=$(printf '%s' "$action" | sed -n 's/.*"action" *: *"\([^"]*\)".*/\1/p')
SPOT_TIME=$(printf '%s' "$action" | sed -n 's/.*"time" *: *"\([^"]*\)".*/\1/p')
export SPOT_ACTION SPOT_TIME
echo "spot-watcher: interruption notice: $SPOT_ACTION at $SPOT_TIME; draining" >&2
"$@"
status=$?
echo "spot-watcher: drain command exited $status" >&2
exit "$status"
