#!/bin/sh
# SPDX-License-Identifier: MIT
# Tests reverse.so one task at a time with apiary-worker --oneshot, which prints the result on
# stdout, or exits 1 with the reason on stderr (3: cannot load the plugin, 4: init() failed).
#
# Usage: test-reverse.sh APIARY_WORKER REVERSE_SO
set -eu

worker=$1
plugin=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() {
        echo "FAIL: $*" >&2
        [ ! -s "$tmp/err" ] || { echo "--- stderr:" >&2; cat "$tmp/err" >&2; }
        exit 1
}

# Text.
out=$(printf 'hello' | "$worker" --oneshot "$plugin" 2>"$tmp/err") || fail "hello: exit status $?"
[ "$out" = "olleh" ] || fail "hello: got \"$out\", expected \"olleh\""
echo "ok 1 - hello -> olleh"

# Bytes, NUL included, and the empty payload.
printf 'a\000b\377' >"$tmp/in"
printf '\377b\000a' >"$tmp/want"
"$worker" --oneshot "$plugin" <"$tmp/in" >"$tmp/out" 2>"$tmp/err" || fail "bytes: exit status $?"
cmp -s "$tmp/out" "$tmp/want" || fail "bytes: wrong result"
"$worker" --oneshot "$plugin" </dev/null >"$tmp/out" 2>"$tmp/err" || fail "empty: exit status $?"
[ ! -s "$tmp/out" ] || fail "empty: non-empty result"
echo "ok 2 - bytes and the empty payload"

# A failed task: exit status 1, the reason on stderr.
status=0
printf 'hello' | "$worker" --oneshot "$plugin" --set MaxSize=3 >"$tmp/out" 2>"$tmp/err" || status=$?
[ "$status" -eq 1 ] || fail "MaxSize=3: exit status $status, expected 1"
grep -q "payload of 5 bytes is longer than MaxSize=3" "$tmp/err" || fail "MaxSize=3: reason not on stderr"
echo "ok 3 - MaxSize=3 fails the task"

# A failed init(): exit status 4, set_error()'s text on stderr.
status=0
"$worker" --oneshot "$plugin" --set MaxSize=lots </dev/null >"$tmp/out" 2>"$tmp/err" || status=$?
[ "$status" -eq 4 ] || fail "MaxSize=lots: exit status $status, expected 4"
grep -q "MaxSize=lots: expected a number of bytes" "$tmp/err" || fail "MaxSize=lots: reason not on stderr"
echo "ok 4 - MaxSize=lots fails init()"

# An unknown key (a typo) fails init() too, naming it.
status=0
"$worker" --oneshot "$plugin" --set MaxSise=3 </dev/null >"$tmp/out" 2>"$tmp/err" || status=$?
[ "$status" -eq 4 ] || fail "MaxSise=3: exit status $status, expected 4"
grep -q "unknown key MaxSise= in \[Pool .* Plugin\]; this plugin knows MaxSize=" "$tmp/err" ||
        fail "MaxSise=3: reason not on stderr"
echo "ok 5 - an unknown key (MaxSise=) fails init()"
