#!/bin/sh
# Wait for an Azure scheduled event that affects this VM, then act before it happens.
#
#   azure-event-watcher.sh [-t TYPES] -- COMMAND [ARGS...]
#
# TYPES is a comma-separated list of event types to act on (default:
# Preempt,Terminate,Reboot,Redeploy; add Freeze for the few-second pauses of live
# maintenance). Waits, with `imdsfs wait --changed`, on $IMDS/scheduledevents (default mount
# /run/imds, mounted with --provider azure): the mount asks Azure for it every 5 s while
# anyone waits, and the loop below turns once per new DocumentIncarnation, never on a timer.
# Then this runs COMMAND once, with AZURE_EVENT (the event's JSON), AZURE_EVENT_TYPE and
# AZURE_EVENT_NOT_BEFORE in its environment, and exits with its status.
#
# The mount is read-only: to let Azure start the event before NotBefore, COMMAND may
# approve it itself (POST {"StartRequests": [{"EventId": ...}]} to
# http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01 with Metadata: true).
set -u
IMDS=${IMDS:-/run/imds}
IMDSFS=${IMDSFS:-imdsfs}
types=Preempt,Terminate,Reboot,Redeploy

usage() { echo "usage: $0 [-t TYPES] -- COMMAND [ARGS...]" >&2; exit 2; }
while getopts t: option; do
    case $option in
        t) types=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
command -v jq >/dev/null || { echo "azure-event-watcher: needs jq" >&2; exit 2; }

cannot() {
    echo "azure-event-watcher: cannot wait (is $IMDS an imdsfs mount of Azure?)" >&2
    exit 2
}
# The first event of one of $types, as one line of JSON; nothing if there is none.
first_event() {
    printf '%s' "$1" | jq -ce --arg types "$types" \
        'first(.Events[] | select(.EventType as $t | $types | split(",") | index($t))) // empty'
}

events=$(cat "$IMDS/scheduledevents") || cannot
while ! event=$(first_event "$events") || [ -z "$event" ]; do
    events=$("$IMDSFS" wait --changed "$IMDS/scheduledevents") || cannot
done
AZURE_EVENT=$event
AZURE_EVENT_TYPE=$(printf '%s' "$event" | jq -r .EventType)
AZURE_EVENT_NOT_BEFORE=$(printf '%s' "$event" | jq -r .NotBefore)
export AZURE_EVENT AZURE_EVENT_TYPE AZURE_EVENT_NOT_BEFORE
echo "azure-event-watcher: $AZURE_EVENT_TYPE not before $AZURE_EVENT_NOT_BEFORE; running $1" >&2
"$@"
status=$?
echo "azure-event-watcher: $1 exited $status" >&2
exit "$status"
