#!/bin/sh
# Build the gateway image with no container registry: a Debian 12 base from Debian's
# own packages (mmdebstrap), imported with buildah, then deploy/Containerfile on top.
#   deploy/build-image.sh [TAG]      (default localhost/stockade-gateway:0.1.0)
# Needs root (or a rootless buildah set-up), mmdebstrap, buildah and a Debian mirror.
set -eu
tag=${1:-localhost/stockade-gateway:0.1.0}
base=localhost/stockade-base:bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! buildah inspect --type image "$base" >/dev/null 2>&1; then
    mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$work/base.tar" "$mirror"
    ctr=$(buildah from scratch)
    buildah add "$ctr" "$work/base.tar" /
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd /bin/sh "$ctr"
    buildah commit --rm "$ctr" "$base"
fi
# The host's CA bundle reaches pip in the build (TLS-inspecting proxies), never the image.
buildah build --layers --isolation chroot --build-arg BASE="$base" \
    --secret id=ca-bundle,src="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" \
    -f "$root/deploy/Containerfile" -t "$tag" "$root"
echo "built $tag"
