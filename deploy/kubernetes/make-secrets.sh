#!/bin/sh
# Makes the secrets the kustomize base's secretGenerator reads, once, before the first
# `kubectl apply -k deploy/kubernetes`: secrets/redis.env with a random Redis password
# (`requirepass`, given to the gateway as STOCKADE_REDIS_PASSWORD). An existing file is
# kept, so re-running never changes a deployed password; delete it to rotate. Without
# it, kustomize refuses to render: no deployment can carry a placeholder password.
set -eu
dir="$(dirname "$0")/secrets"
env="$dir/redis.env"
mkdir -p "$dir"
if [ -e "$env" ]; then
    echo "$env exists: kept (delete it to make a new password)"
    exit 0
fi
umask 077
# 24 random bytes, hex: no character kustomize, Redis or a shell would treat specially.
password="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
if [ "${#password}" -ne 48 ]; then
    echo "make-secrets.sh: could not read 24 bytes from /dev/urandom" >&2
    exit 1
fi
set -C  # noclobber: two runs at once never overwrite each other's file
printf 'redis-password=%s\n' "$password" > "$env"
echo "$env: a new Redis password"
