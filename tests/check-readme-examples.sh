#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Runs the examples of README.md as a reader would, against a real apiaryd serving the example
# configuration on a private bus, and compares their output with what the README says.
#
# Usage: check-readme-examples.sh README EXAMPLE_CONFIG
#   with $APIARYD, $APIARY_WORKER_PATH and $APIARY_PLUGIN_DIR set (meson's integration_env), and
#   optionally $APIARY_TEST_WRAPPER (e.g. valgrind) to run apiaryd under.
#
# The examples are the lines between "<!-- readme-test: begin" and "<!-- readme-test: end" (any
# number of such blocks), outside the ``` fences. In them:
#   * a command is one or more lines; a command with a here-document (<<'EOF' ... EOF) takes the
#     lines up to its delimiter as they are;
#   * each command is followed by its expected output, one "# → LINE" per line (stdout and
#     stderr together), compared exactly;
#   * other lines starting with "#" are comments, and blank lines separate commands.
# Each command runs on its own in bash, from the directory of README, with A set to the private
# bus's address, as in the README's "Try it" section. The commands run in order against the same
# apiaryd, started afresh for this test, so task ids are what the README shows.
#
# Exit status: 0 if every example printed what the README says, 1 if not (or if the README has no
# examples, or apiaryd did not come up or did not stop cleanly), 77 (skip) without busctl or
# dbus-daemon.
set -uo pipefail

if [ $# -ne 2 ]; then
        echo "Usage: $0 README EXAMPLE_CONFIG" >&2
        exit 2
fi
for tool in busctl dbus-daemon; do
        if ! command -v "$tool" >/dev/null; then
                echo "SKIP: $tool is not installed" >&2
                exit 77
        fi
done

readme=$(realpath "$1")
example=$2
for v in APIARYD APIARY_WORKER_PATH APIARY_PLUGIN_DIR; do
        if [ -z "${!v:-}" ]; then
                echo "FAIL: \$$v is not set (meson test sets it)" >&2
                exit 1
        fi
done

# A short path: a unix socket's path must fit in 108 bytes.
tmp=$(mktemp -d /tmp/apiary-readme-XXXXXX)
bus_pid=
apiaryd_pid=

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
        if [ -n "$apiaryd_pid" ] && kill -0 "$apiaryd_pid" 2>/dev/null; then
                kill -TERM "$apiaryd_pid" 2>/dev/null
                for _ in $(seq 100); do
                        kill -0 "$apiaryd_pid" 2>/dev/null || break
                        sleep 0.1
                done
                kill -KILL "$apiaryd_pid" 2>/dev/null
                wait "$apiaryd_pid" 2>/dev/null
        fi
        if [ -n "$bus_pid" ]; then
                kill -TERM "$bus_pid" 2>/dev/null
                wait "$bus_pid" 2>/dev/null
        fi
        rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail_setup() {
        echo "FAIL: $*" >&2
        for f in "$tmp"/apiaryd.log "$tmp"/bus.log; do
                [ -s "$f" ] && { echo "--- ${f##*/}:" >&2; cat "$f" >&2; }
        done
        exit 1
}

# ---- the examples, read before anything starts: a README without them fails at once ----

examples=$tmp/examples
awk '
        /^<!-- readme-test: begin/ { inside = 1; next }
        /^<!-- readme-test: end/ { inside = 0; next }
        inside && /^```/ { next }
        inside { print }
' "$readme" >"$examples"
if ! grep -q '^# → ' "$examples"; then
        echo "FAIL: $readme has no examples between <!-- readme-test: begin --> and <!-- readme-test: end -->" >&2
        exit 1
fi

# ---- python3 with python3-dbus, as "python3" (a pyenv or venv python3 first in $PATH may lack it) ----

mkdir "$tmp/bin"
if grep -q 'python3' "$examples"; then
        python=
        for p in python3 /usr/bin/python3; do
                if command -v "$p" >/dev/null && "$p" -c 'import dbus' 2>/dev/null; then
                        python=$(command -v "$p")
                        break
                fi
        done
        [ -n "$python" ] || fail_setup "the README runs python3 with python3-dbus, and no python3 here imports dbus (tools/deps installs python3-dbus)"
        ln -s "$python" "$tmp/bin/python3"
fi
export PATH="$tmp/bin:$PATH"

# ---- a private bus, as tools/run makes one ----

cat >"$tmp/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$tmp/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
EOF
dbus-daemon --nofork --nopidfile --nosyslog --config-file="$tmp/bus.conf" --print-address=1 \
        >"$tmp/bus.address" 2>"$tmp/bus.log" &
bus_pid=$!
for _ in $(seq 100); do
        [ -s "$tmp/bus.address" ] && break
        kill -0 "$bus_pid" 2>/dev/null || break
        sleep 0.05
done
[ -s "$tmp/bus.address" ] || fail_setup "the private dbus-daemon did not start"
A=unix:path=$tmp/bus
export A

# ---- apiaryd with the example configuration, its plugins from the build tree ----

cp "$example" "$tmp/apiary.conf"
mkdir "$tmp/apiary.conf.d"
# As tools/run writes it: the build tree's plugins, and the demo pools as the caller, not nobody.
printf '[Apiary]\nPluginDirectory=%s\n[Pool echo]\nUser=\n[Pool echo-io]\nUser=\n' "$APIARY_PLUGIN_DIR" \
        >"$tmp/apiary.conf.d/50-build-tree.conf"

# shellcheck disable=SC2086  # the wrapper is a command line, split on purpose
env -u NOTIFY_SOCKET -u JOURNAL_STREAM ${APIARY_TEST_WRAPPER:-} "$APIARYD" --config="$tmp/apiary.conf" \
        --bus="$A" --worker-path="$APIARY_WORKER_PATH" </dev/null >"$tmp/apiaryd.log" 2>&1 &
apiaryd_pid=$!

# Until every pool of the example runs: 10 s, or 30 s under a wrapper such as valgrind.
get() {
        busctl --address="$A" --timeout=2 get-property org.apiary.Apiary1 "$@" 2>/dev/null
}
limit=100
[ -n "${APIARY_TEST_WRAPPER:-}" ] && limit=300
up=false
for _ in $(seq "$limit"); do
        kill -0 "$apiaryd_pid" 2>/dev/null || fail_setup "apiaryd exited before its pools ran"
        if [ "$(get /org/apiary/Apiary1 org.apiary.Apiary1.Manager State)" = 's "running"' ]; then
                pools=$(get /org/apiary/Apiary1 org.apiary.Apiary1.Manager Pools | grep -o '"[^"]*"' | tr -d '"')
                all=true
                for p in $pools; do
                        [ "$(get "$p" org.apiary.Apiary1.Pool State)" = 's "running"' ] || all=false
                done
                if [ -n "$pools" ] && $all; then
                        up=true
                        break
                fi
        fi
        sleep 0.1
done
$up || fail_setup "the pools of $example were not all running after $((limit / 10)) s"

# ---- the examples ----

cd "$(dirname "$readme")" || exit 1
n=0
failed=0
cmd=
expected=()
heredoc=

run_example() {
        local actual want

        n=$((n + 1))
        actual=$(timeout 60 bash -c "$cmd" 2>&1)
        want=$(printf '%s\n' "${expected[@]}")
        if [ "$actual" == "$want" ]; then
                echo "ok $n - ${cmd%%$'\n'*}"
        else
                failed=$((failed + 1))
                echo "not ok $n - ${cmd%%$'\n'*}"
                echo "# expected:"
                printf '%s\n' "$want" | sed 's/^/#   /'
                echo "# got:"
                printf '%s\n' "$actual" | sed 's/^/#   /'
        fi
        cmd=
        expected=()
}

malformed() {
        echo "FAIL: README example block: $*" >&2
        exit 1
}

while IFS= read -r line || [ -n "$line" ]; do
        if [ -n "$heredoc" ]; then
                cmd+=$'\n'$line
                [ "$line" == "$heredoc" ] && heredoc=
                continue
        fi
        if [[ $line == '# →'* ]]; then
                [ -n "$cmd" ] || malformed "expected output without a command: $line"
                want=${line#'# →'}
                expected+=("${want# }")
                continue
        fi
        # Anything else ends the expected output of the command before it.
        if [ ${#expected[@]} -gt 0 ]; then
                run_example
        fi
        if [[ -z $line || $line == '#'* ]]; then
                [ -z "$cmd" ] || malformed "no expected output (\"# → ...\") after: ${cmd%%$'\n'*}"
                continue
        fi
        if [ -n "$cmd" ]; then
                cmd+=$'\n'$line
        else
                cmd=$line
        fi
        if [[ $line =~ \<\<-?[\'\"]?([A-Za-z_][A-Za-z0-9_]*)[\'\"]? ]]; then
                heredoc=${BASH_REMATCH[1]}
        fi
done <"$examples"
[ -z "$heredoc" ] || malformed "here-document not closed with $heredoc"
if [ ${#expected[@]} -gt 0 ]; then
        run_example
fi
[ -z "$cmd" ] || malformed "no expected output after: ${cmd%%$'\n'*}"

# ---- a clean stop: exit status 0, as the harness of the other integration tests demands ----

kill -TERM "$apiaryd_pid"
status=
for _ in $(seq "$limit"); do
        if ! kill -0 "$apiaryd_pid" 2>/dev/null; then
                wait "$apiaryd_pid"
                status=$?
                break
        fi
        sleep 0.1
done
if [ -z "$status" ]; then
        fail_setup "apiaryd did not stop within $((limit / 10)) s of SIGTERM"
fi
apiaryd_pid=
if [ "$status" -ne 0 ]; then
        fail_setup "apiaryd exited with status $status on SIGTERM"
fi

echo "$((n - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
