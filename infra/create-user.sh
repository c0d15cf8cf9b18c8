#!/bin/sh
# The image's unprivileged user: `ray` with UID 1000 (Ray's own images and KubeRay's examples use 1000).
# Ubuntu 24.04 images already have `ubuntu` at UID 1000, so a plain `useradd --uid 1000` fails there: whoever
# holds UID 1000 goes first. PREFIX edits the /etc of another root instead of / (tests/infra uses it).
set -eu
etc="${PREFIX:-}/etc"
holder=$(awk -F: '$3 == 1000 { print $1 }' "$etc/passwd")
if [ -n "$holder" ] && [ "$holder" != ray ]; then
    userdel ${PREFIX:+--prefix "$PREFIX"} --remove "$holder"
fi
if ! grep -q '^ray:' "$etc/passwd"; then
    useradd ${PREFIX:+--prefix "$PREFIX"} --create-home --uid 1000 --user-group --shell /bin/bash ray
fi
