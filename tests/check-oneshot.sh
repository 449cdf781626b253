#!/bin/bash
# SPDX-License-Identifier: MIT
#
# apiary-worker --oneshot PLUGIN [--set KEY=VALUE]...: one task, payload on stdin, result on stdout,
# with no apiaryd and no bus. Synchronous plugins (echo, primes, control), asynchronous ones on
# the worker's loop (sleep, exec), and each way it can fail, with its exit status:
# 1 the task failed (the reason alone on stderr), 2 bad command line, 3 the plugin cannot be
# loaded, 4 its init() failed.
#
# Usage: check-oneshot.sh APIARY_WORKER PLUGIN_DIR TEST_PLUGIN_DIR
set -euo pipefail

if [ $# -ne 3 ]; then
        echo "Usage: $0 APIARY_WORKER PLUGIN_DIR TEST_PLUGIN_DIR" >&2
        exit 2
fi
worker=$1
plugins=$2
test_plugins=$3

tmp=$(mktemp -d "${TMPDIR:-/tmp}/apiary-check-oneshot-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
n=0

fail() {
        echo "FAIL: $*" >&2
        for f in "$tmp"/out "$tmp"/err; do
                [ -s "$f" ] && { echo "--- ${f##*/}:" >&2; head -c 2000 "$f" | cat -v >&2; echo >&2; }
        done
        exit 1
}

ok() {
        echo "ok $((n += 1)) - $*"
}

# oneshot PAYLOAD_FILE ARGS...: runs the worker, with stdout in $tmp/out, stderr in $tmp/err and
# the exit status in $status.
oneshot() {
        local in=$1

        shift
        status=0
        timeout 30 "$worker" --oneshot "$@" <"$in" >"$tmp/out" 2>"$tmp/err" || status=$?
}

# expect_result PAYLOAD RESULT ARGS...: the task succeeds with RESULT, and nothing on stderr.
expect_result() {
        local payload=$1 result=$2

        shift 2
        printf '%s' "$payload" >"$tmp/in"
        oneshot "$tmp/in" "$@"
        [ "$status" -eq 0 ] || fail "$*, \"$payload\": exit status $status, expected 0"
        [ "$(cat "$tmp/out")" = "$result" ] || fail "$*, \"$payload\": result \"$(cat "$tmp/out")\", expected \"$result\""
        [ ! -s "$tmp/err" ] || fail "$*, \"$payload\": unexpected output on stderr"
}

# expect_exit STATUS TEXT PAYLOAD ARGS...: exit status STATUS, TEXT on stderr, nothing on stdout.
expect_exit() {
        local want=$1 text=$2 payload=$3

        shift 3
        printf '%s' "$payload" >"$tmp/in"
        oneshot "$tmp/in" "$@"
        [ "$status" -eq "$want" ] || fail "$*: exit status $status, expected $want"
        grep -qF -- "$text" "$tmp/err" || fail "$*: stderr does not say \"$text\""
        [ ! -s "$tmp/out" ] || fail "$*: unexpected output on stdout"
}

# ---- results ----

# Every byte value, and more than one read() of stdin and one write() of a pipe.
python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 1024)' >"$tmp/bytes"
oneshot "$tmp/bytes" "$plugins/echo.so"
[ "$status" -eq 0 ] || fail "echo: exit status $status"
cmp -s "$tmp/bytes" "$tmp/out" || fail "echo: the result differs from the payload"
ok "echo: 256 KiB of every byte value come back unchanged"

expect_result "" "" "$plugins/echo.so"
ok "echo: the empty payload"

expect_result 100 25 "$plugins/primes.so"
ok "primes: 100 -> 25"

# Asynchronous: completed from a timer of the worker's loop, after run() has returned.
start=$(date +%s%N)
expect_result 50 50 "$plugins/sleep.so"
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
[ "$elapsed_ms" -ge 50 ] || fail "sleep: 50 ms took $elapsed_ms ms"
ok "sleep: 50 -> 50, after ${elapsed_ms} ms"

# Asynchronous, with a child process, pipes and a pidfd on the loop, configured with --set.
expect_result "hello, world" "HELLO, WORLD" "$plugins/exec.so" --set "Command=/usr/bin/tr a-z A-Z"
ok "exec: Command=/usr/bin/tr a-z A-Z"

# A key given twice keeps the last value, as a drop-in overrides one.
expect_result abc ABC "$plugins/exec.so" --set Command=/bin/false --set "Command=/usr/bin/tr a-z A-Z" --pool p --slot 3
ok "exec: --set twice, the last value wins; --pool and --slot"

# Logs go to stderr, stdout has the result alone (check-plugin-header.sh has a plugin that prints).
printf 'x' >"$tmp/in"
oneshot "$tmp/in" "$test_plugins/control.so" --set InitMode=ok --log-level=debug
[[ "$status" -eq 0 && "$(cat "$tmp/out")" = x ]] || fail "control --log-level=debug: status $status"
grep -q "control plugin ready" "$tmp/err" || fail "control --log-level=debug: host->log() not on stderr"
ok "host->log() goes to stderr, the result alone to stdout"

# The largest result, APIARY_RESULT_SIZE_MAX of <apiary/plugin.h>, as in a pool
# (tests/test-bad-input.c): whole at the limit, a failure one byte above it.
max=$(printf '#include <apiary/plugin.h>\nAPIARY_RESULT_SIZE_MAX\n' | cpp -P -I"$(dirname "$0")/../include" - | tail -1)
max=$((${max//u/}))
printf 'big %d' "$max" >"$tmp/in"
oneshot "$tmp/in" "$test_plugins/control.so"
[ "$status" -eq 0 ] || fail "control, big $max: exit status $status"
[ "$(stat -c %s "$tmp/out")" -eq "$max" ] || fail "control, big $max: $(stat -c %s "$tmp/out") bytes"
expect_exit 1 "result too large: $((max + 1)) bytes (at most $max)" "big $((max + 1))" "$test_plugins/control.so"
ok "control: a result of $max bytes (APIARY_RESULT_SIZE_MAX) passes, one byte more fails, as in a pool"

# A plugin without init(): run() gets the host table as its state, and completes its task.
expect_result abc "no-init: abc" "$test_plugins/no-init.so"
ok "no-init: without init(), run() reaches the host through its state"

# A task that never ends on its own: SIGTERM (or Ctrl-C) ends the loop, fini() runs and may
# still complete it ("pend" waits for fini(), which fails it here).
printf pend >"$tmp/in"
status=0
timeout 30 "$worker" --oneshot "$test_plugins/control.so" --set FiniMode=fail-pending \
        <"$tmp/in" >"$tmp/out" 2>"$tmp/err" &
pid=$!
# Once the plugin holds the task (it logs so), not before: a signal that comes first finds no task.
for _ in $(seq 200); do
        grep -q "holding a pending task" "$tmp/err" && break
        sleep 0.05
done
kill -TERM "$pid"
wait "$pid" || status=$?
[ "$status" -eq 1 ] || fail "control pend, SIGTERM: exit status $status, expected 1"
[ "$(tail -n 1 "$tmp/err")" = "failed in fini()" ] || fail "control pend, SIGTERM: stderr does not end with fini()'s reason"
ok "control: SIGTERM on a pending task runs fini(), whose completion is the task's end"

# ---- failures ----

expect_exit 1 boom "fail boom" "$test_plugins/control.so"
[ "$(cat "$tmp/err")" = boom ] || fail "control, \"fail boom\": stderr is not the reason alone"
ok "control: \"fail boom\" -> exit 1, \"boom\" on stderr"

expect_exit 1 "command exited with status 1" "" "$plugins/exec.so" --set Command=/bin/false
ok "exec: Command=/bin/false -> exit 1 with the reason"

expect_exit 1 "returned 0 without completing the task" return-nothing "$test_plugins/control.so"
ok "control: run() returns without completing -> exit 1"

# No apiaryd to submit to: host->submit() fails (-ENOTCONN), and the control plugin says so.
expect_exit 1 "submit failed" "relay echo x" "$test_plugins/control.so"
ok "control: host->submit() is unavailable"

expect_exit 3 "was built for plugin ABI version 999, but this apiary-worker speaks version 1" x \
        "$test_plugins/bad-abi.so"
ok "bad-abi -> exit 3 with the ABI message"

expect_exit 3 "does not export \"apiary_plugin\"" x "$test_plugins/no-symbol.so"
ok "no-symbol -> exit 3"

expect_exit 3 "cannot load $tmp/missing.so" x "$tmp/missing.so"
ok "a missing file -> exit 3"

expect_exit 4 "plugin control: init failed: told to fail by InitMode=fail" x "$test_plugins/control.so" \
        --set InitMode=fail
ok "control InitMode=fail -> exit 4"

expect_exit 4 "Command= is not set" x "$plugins/exec.so"
ok "exec without Command= -> exit 4"

expect_exit 2 "--set expects KEY=VALUE" x "$plugins/echo.so" --set novalue
expect_exit 2 "unexpected argument" x "$plugins/echo.so" payload
ok "bad command lines -> exit 2"

# A plugin in the current directory, named without a "/": a path, not a library search.
(cd "$plugins" && printf 'here' | "$worker" --oneshot echo.so >"$tmp/out" 2>"$tmp/err") || fail "echo.so in ."
[ "$(cat "$tmp/out")" = here ] || fail "echo.so in .: wrong result"
ok "a plugin named without a / is looked up in ., not in the library path"

echo "1..$n"
