#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Checks that the man pages (man/*.scd) match the code:
#   (a) every key of the parser's key tables (apiary_keys[] and pool_keys[] in config/config.c)
#       is described in man/apiary.conf.5.scd, in the right section, and in docs/apiary.conf.md;
#   (b) every method, property and signal that a real apiaryd introspects on the interfaces
#       org.apiary.Apiary1.* (Manager, a Pool and a Worker object), and every error name
#       org.apiary.Apiary1.Error.* in daemon/*.h, is described in man/org.apiary.Apiary1.5.scd,
#       under its interface (errors under ERRORS);
#   (c) each built page renders with `man -l --warnings` without warnings (skipped without man).
#
# Usage: check-man-pages.sh SRCDIR [BUILT_PAGE...]
#   SRCDIR holds config/config.c, docs/apiary.conf.md, daemon/*.h and man/*.scd. For (b),
#   $APIARYD, $APIARY_WORKER_PATH and $APIARY_PLUGIN_DIR must be set (meson's integration_env).
#   Without busctl or dbus-daemon, (b)'s introspection part is skipped with a note.
#
# Exit status: 0 if everything matches, 1 if not.
set -uo pipefail

if [ $# -lt 1 ]; then
        echo "Usage: $0 SRCDIR [BUILT_PAGE...]" >&2
        exit 2
fi
src=$1
shift

failed=0
fail() {
        echo "FAIL: $*" >&2
        failed=1
}

conf_scd=$src/man/apiary.conf.5.scd
conf_md=$src/docs/apiary.conf.md
dbus_scd=$src/man/org.apiary.Apiary1.5.scd
for f in "$src/config/config.c" "$conf_scd" "$conf_md" "$dbus_scd"; do
        [ -r "$f" ] || { echo "FAIL: cannot read $f" >&2; exit 1; }
done

# The definition lines (those starting with "*", scdoc's bold term of an indented list) of the
# top-level section ("# HEADING") of scdoc page $1 whose heading is $2.
section_terms() {
        awk -v h="# $2" '
                /^# / { inside = ($0 == h); next }
                inside && /^\*/ { print }
        ' "$1"
}

# The keys of table $1 in config.c: its lines '{ "Key", config_parse_...'.
table_keys() {
        awk -v t="$1" '
                $0 ~ "^static const ConfigKey " t "\\[\\] = \\{" { inside = 1; next }
                inside && /^\};/ { inside = 0 }
                inside && match($0, /^[ \t]*\{ "[A-Za-z0-9]+", config_parse_/) {
                        s = substr($0, RSTART, RLENGTH); sub(/^[ \t]*\{ "/, "", s); sub(/".*/, "", s); print s
                }
        ' "$src/config/config.c"
}

# ---- (a) configuration keys ----

check_keys() { # TABLE SECTION
        local keys key n=0
        keys=$(table_keys "$1")
        terms=$(section_terms "$conf_scd" "$2")
        for key in $keys; do
                n=$((n + 1))
                grep -qF -- "*$key=*" <<<"$terms" ||
                        fail "config key $key= ($1[] in config/config.c) is not described in section \"$2\" of man/apiary.conf.5.scd"
                grep -qF -- "\`$key=\`" "$conf_md" ||
                        fail "config key $key= ($1[] in config/config.c) is not described in docs/apiary.conf.md"
        done
        [ "$n" -gt 0 ] || fail "found no keys in $1[] of config/config.c: has its format changed?"
        echo "# $n keys of $1[] checked"
}
check_keys apiary_keys "[APIARY] SECTION"
check_keys pool_keys "[POOL NAME] SECTION"

# ---- (b) D-Bus members and errors ----

errors=$(grep -ohE 'org\.apiary\.Apiary1\.Error\.[A-Za-z0-9_]+' "$src"/daemon/*.h | sort -u)
[ -n "$errors" ] || fail "found no org.apiary.Apiary1.Error.* names in daemon/*.h"
error_terms=$(section_terms "$dbus_scd" "ERRORS")
for e in $errors; do
        grep -qF -- "*$e*" <<<"$error_terms" || fail "error $e (daemon/*.h) is not described under ERRORS in man/org.apiary.Apiary1.5.scd"
done
echo "# $(wc -w <<<"$errors") error names checked"

introspect=true
for tool in busctl dbus-daemon python3; do
        if ! command -v "$tool" >/dev/null; then
                echo "# SKIP introspection: $tool is not installed" >&2
                introspect=false
        fi
done
if $introspect; then
        for v in APIARYD APIARY_WORKER_PATH APIARY_PLUGIN_DIR; do
                if [ -z "${!v:-}" ]; then
                        echo "FAIL: \$$v is not set (meson test sets it)" >&2
                        exit 1
                fi
        done
fi

if $introspect; then
        tmp=$(mktemp -d /tmp/apiary-man-XXXXXX)
        bus_pid=
        apiaryd_pid=
        # shellcheck disable=SC2317  # called from the EXIT trap
        cleanup() {
                if [ -n "$apiaryd_pid" ]; then
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

        cat >"$tmp/bus.conf" <<BUS
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$tmp/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
  </policy>
</busconfig>
BUS
        dbus-daemon --nofork --nopidfile --nosyslog --config-file="$tmp/bus.conf" --print-address=1 \
                >"$tmp/bus.address" 2>"$tmp/bus.log" &
        bus_pid=$!
        for _ in $(seq 100); do
                [ -s "$tmp/bus.address" ] && break
                sleep 0.05
        done
        A=unix:path=$tmp/bus
        printf '[Pool echo]\nPlugin=%s/echo.so\nWorkers=1\n' "$APIARY_PLUGIN_DIR" >"$tmp/apiary.conf"
        env -u NOTIFY_SOCKET -u JOURNAL_STREAM "$APIARYD" --config="$tmp/apiary.conf" --bus="$A" \
                --worker-path="$APIARY_WORKER_PATH" </dev/null >"$tmp/apiaryd.log" 2>&1 &
        apiaryd_pid=$!

        paths="/org/apiary/Apiary1 /org/apiary/Apiary1/pool/echo /org/apiary/Apiary1/pool/echo/0"
        up=false
        for _ in $(seq 100); do
                kill -0 "$apiaryd_pid" 2>/dev/null || break
                if busctl --address="$A" --timeout=2 introspect --xml-interface org.apiary.Apiary1 \
                        /org/apiary/Apiary1/pool/echo/0 >/dev/null 2>&1; then
                        up=true
                        break
                fi
                sleep 0.1
        done
        if ! $up; then
                echo "FAIL: apiaryd did not come up on a private bus" >&2
                for f in "$tmp/apiaryd.log" "$tmp/bus.log"; do
                        [ -s "$f" ] && { echo "--- ${f##*/}:" >&2; cat "$f" >&2; }
                done
                exit 1
        fi

        n=0
        for p in $paths; do
                busctl --address="$A" --timeout=5 introspect --xml-interface org.apiary.Apiary1 "$p" \
                        >"$tmp/xml" || { fail "cannot introspect $p"; continue; }
                # "INTERFACE KIND NAME" for each member of the org.apiary.Apiary1.* interfaces.
                members=$(python3 - "$tmp/xml" <<'PY'
import sys
import xml.etree.ElementTree as ET
for iface in ET.parse(sys.argv[1]).getroot().iter("interface"):
    name = iface.get("name")
    if not name.startswith("org.apiary.Apiary1."):
        continue
    for m in iface:
        if m.tag in ("method", "property", "signal"):
            print(name, m.tag, m.get("name"))
PY
                ) || { fail "cannot parse the introspection data of $p"; continue; }
                [ -n "$members" ] || fail "$p has no org.apiary.Apiary1.* members"
                while read -r iface kind name; do
                        n=$((n + 1))
                        section_terms "$dbus_scd" "INTERFACE $iface" | grep -qF -- "*$name*" ||
                                fail "$kind $iface.$name (introspected on $p) is not described under \"INTERFACE $iface\" in man/org.apiary.Apiary1.5.scd"
                done <<<"$members"
        done
        echo "# $n introspected members checked"
fi

# ---- (c) the built pages render without warnings ----

if [ $# -gt 0 ]; then
        if command -v man >/dev/null; then
                for page in "$@"; do
                        if [ ! -s "$page" ]; then
                                fail "$page was not built"
                                continue
                        fi
                        warnings=$(MANWIDTH=80 man -l --warnings "$page" 2>&1 >/dev/null)
                        [ -z "$warnings" ] || fail "man -l --warnings $page: $warnings"
                done
                echo "# $# built pages rendered"
        else
                echo "# SKIP rendering: man is not installed" >&2
        fi
fi

exit "$failed"
