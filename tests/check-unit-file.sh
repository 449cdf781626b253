#!/bin/bash
# SPDX-License-Identifier: MIT
#
# systemd-analyze verify on apiary.service: no error and no warning. The unit given here is a copy
# configured with ExecStart= in the build tree (tools/meson.build), because verify checks that the
# binary exists and is executable. Skips (77) where systemd-analyze is not installed.
#
# Usage: check-unit-file.sh UNIT_FILE
set -euo pipefail

if [ $# -ne 1 ]; then
        echo "Usage: $0 UNIT_FILE" >&2
        exit 2
fi
unit=$1

if ! command -v systemd-analyze >/dev/null; then
        echo "SKIP: systemd-analyze is not installed"
        exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/apiary-check-unit-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# verify exits 0 on settings it ignores ("Failed to parse ..., ignoring"), so any output fails too.
# --man=no: the unit documents itself with file: links, nothing to look up in man.
verify() {
        systemd-analyze verify --man=no "$1" 2>&1
}

# First a unit that cannot be wrong: if verify has something to say about it, this environment
# cannot run verify (no usable cgroup or runtime directory in some containers, an old systemd).
printf '[Service]\nType=oneshot\nExecStart=/bin/true\n' >"$tmp/apiary-sanity-check.service"
if ! out=$(verify "$tmp/apiary-sanity-check.service") || [ -n "$out" ]; then
        echo "SKIP: systemd-analyze verify does not work here, even on a trivial unit:"
        echo "$out"
        exit 77
fi

status=0
out=$(verify "$unit") || status=$?
if [ "$status" -ne 0 ] || [ -n "$out" ]; then
        echo "FAIL: systemd-analyze verify $unit: exit status $status" >&2
        [ -z "$out" ] || echo "$out" >&2
        exit 1
fi
echo "ok 1 - systemd-analyze verify $unit"
