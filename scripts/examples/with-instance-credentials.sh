#!/bin/sh
# Run a command with the instance role's credentials in its environment.
#
#   with-instance-credentials.sh [-r ROLE] -- COMMAND [ARGS...]
#
# For programs that read AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN but
# not IMDS (older tools, containers started with --env). The credentials come from
# $IMDS/iam/security-credentials/ROLE (default: the instance's only role), which imdsfs keeps
# root-only, so run this as root. They expire (AWS_CREDENTIAL_EXPIRATION says when; EC2
# rotates them hours before): for a long-running program, prefer an SDK that reads IMDS.
# Needs jq. Exits 1, naming the problem (never a secret), if there are no credentials.
set -eu
IMDS=${IMDS:-/run/imds}
role=

usage() { echo "usage: $0 [-r ROLE] -- COMMAND [ARGS...]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case $1 in
        -r) [ $# -ge 2 ] || usage; role=$2; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || usage

fail() { echo "with-instance-credentials: $*" >&2; exit 1; }
if [ -z "$role" ]; then
    role=$(ls "$IMDS/iam/security-credentials" 2>/dev/null | head -n 1) \
        || fail "cannot list $IMDS/iam/security-credentials"
    [ -n "$role" ] || fail "this instance has no IAM role"
fi
file="$IMDS/iam/security-credentials/$role"
document=$(cat "$file") || fail "cannot read $file"

field() { printf '%s' "$document" | jq -er --arg f "$1" '.[$f]'; }
[ "$(field Code)" = Success ] || fail "credentials for $role are not usable (Code is not Success)"
AWS_ACCESS_KEY_ID=$(field AccessKeyId) || fail "no AccessKeyId for $role"
AWS_SECRET_ACCESS_KEY=$(field SecretAccessKey) || fail "no SecretAccessKey for $role"
AWS_SESSION_TOKEN=$(field Token) || fail "no Token for $role"
AWS_CREDENTIAL_EXPIRATION=$(field Expiration) || fail "no Expiration for $role"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_CREDENTIAL_EXPIRATION
if [ -z "${AWS_REGION:-}" ] && region=$(cat "$IMDS/placement/region" 2>/dev/null); then
    AWS_REGION=$region AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-$region}
    export AWS_REGION AWS_DEFAULT_REGION
fi
exec "$@"
