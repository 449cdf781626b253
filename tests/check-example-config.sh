#!/bin/bash
# SPDX-License-Identifier: MIT
#
# apiaryd --check-config on the shipped example configuration (config/apiary.conf): it must print
# nothing and exit 0. Then the same with a broken drop-in: it must exit 1 with one line on stderr
# that names the drop-in file, the group and the key (docs/apiary.conf.md, "Errors").
#
# Usage: check-example-config.sh APIARYD EXAMPLE_CONFIG PLUGIN_DIR
#   PLUGIN_DIR is the build tree's plugin directory, set with a drop-in as tools/run does, so that
#   the plugin checks of --check-config find echo.so without an install.
set -euo pipefail

if [ $# -ne 3 ]; then
        echo "Usage: $0 APIARYD EXAMPLE_CONFIG PLUGIN_DIR" >&2
        exit 2
fi
apiaryd=$1
example=$2
plugin_dir=$3

tmp=$(mktemp -d "${TMPDIR:-/tmp}/apiary-check-config-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() {
        echo "FAIL: $*" >&2
        for f in "$tmp"/stdout "$tmp"/stderr; do
                [ -s "$f" ] && { echo "--- ${f##*/}:" >&2; cat "$f" >&2; }
        done
        exit 1
}

check_config() {
        local status=0

        "$apiaryd" --check-config --config="$tmp/apiary.conf" >"$tmp/stdout" 2>"$tmp/stderr" || status=$?
        return "$status"
}

cp "$example" "$tmp/apiary.conf"
mkdir "$tmp/apiary.conf.d"
printf '[Apiary]\nPluginDirectory=%s\n' "$plugin_dir" >"$tmp/apiary.conf.d/50-build-tree.conf"

# 1. The example as shipped: valid, and silent.
status=0
check_config || status=$?
[ "$status" -eq 0 ] || fail "the example configuration: exit status $status, expected 0"
[ ! -s "$tmp/stdout" ] || fail "the example configuration: unexpected output on stdout"
[ ! -s "$tmp/stderr" ] || fail "the example configuration: unexpected output on stderr"
echo "ok 1 - example configuration: exit 0, no output"

# 2. A drop-in that breaks one key of one pool.
dropin="$tmp/apiary.conf.d/90-broken.conf"
printf '[Pool echo]\nWorkers=lots\n' >"$dropin"
status=0
check_config || status=$?
[ "$status" -eq 1 ] || fail "broken drop-in: exit status $status, expected 1"
[ ! -s "$tmp/stdout" ] || fail "broken drop-in: unexpected output on stdout"
[ "$(wc -l <"$tmp/stderr")" -eq 1 ] || fail "broken drop-in: expected exactly one line on stderr"
msg=$(cat "$tmp/stderr")
for want in "$dropin:" "[Pool echo]" "Workers=lots"; do
        [[ "$msg" == *"$want"* ]] || fail "broken drop-in: the message does not name \"$want\""
done
echo "ok 2 - broken drop-in: exit 1, $msg"
