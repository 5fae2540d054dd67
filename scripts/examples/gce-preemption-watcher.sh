#!/bin/sh
# Wait for Google Compute Engine to preempt this VM, then act in the ~30 s it gives.
#
#   gce-preemption-watcher.sh -- COMMAND [ARGS...]
#
# Waits, with `imdsfs wait --changed`, for $IMDS/instance/preempted (default mount
# /run/imds, mounted with --provider gce) to become TRUE: Google's documented signal. The
# mount learns of it from GCE's change feed at once, at no cost per waiter; the loop below
# turns once per change of the value, never on a timer. Then this runs COMMAND once and
# exits with its status. (instance/maintenance-event works the same way, for live
# migrations: wait until it is no longer NONE.)
set -u
IMDS=${IMDS:-/run/imds}
IMDSFS=${IMDSFS:-imdsfs}

usage() { echo "usage: $0 -- COMMAND [ARGS...]" >&2; exit 2; }
[ "${1:-}" = "--" ] && shift
[ $# -ge 1 ] || usage

cannot() {
    echo "gce-preemption-watcher: cannot wait (is $IMDS an imdsfs mount of GCE?)" >&2
    exit 2
}
preempted=$(cat "$IMDS/instance/preempted") || cannot
while [ "$preempted" != TRUE ]; do
    preempted=$("$IMDSFS" wait --changed "$IMDS/instance/preempted") || cannot
done
echo "gce-preemption-watcher: preempted; running $1" >&2
"$@"
status=$?
echo "gce-preemption-watcher: $1 exited $status" >&2
exit "$status"
