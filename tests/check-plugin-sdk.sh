#!/bin/bash
# SPDX-License-Identifier: MIT
#
# The plugin SDK end to end, as a plugin author or a packager meets it:
#   1. meson install of this build into a temporary DESTDIR;
#   2. apiary-plugin.pc from there (and only from there) gives the header, no libraries, the ABI
#      version of the installed header, and plugindir and apiary_worker inside the DESTDIR;
#   3. examples/plugin-template is installed with the docs, builds against the .pc with
#      -Dwerror=true, exports nothing but apiary_plugin, passes its own test (apiary-worker
#      --oneshot, the installed one) and installs into plugindir;
#   4. the installed apiaryd, on a private dbus-daemon, runs tasks through the installed plugin
#      and apiary-worker: a result, and a failure whose reason comes from the plugin's config.
#
# The .pc file lives in DESTDIR/PREFIX/...; PKG_CONFIG_SYSROOT_DIR=DESTDIR makes pkg-config (pkgconf)
# put the DESTDIR in front of every path it prints, -I and variables alike.
#
# Usage: check-plugin-sdk.sh BUILD_ROOT TEMPLATE_DIR PKGCONFIG_DIR APIARYD
#   PKGCONFIG_DIR and APIARYD are the installed paths (PREFIX/LIBDIR/pkgconfig, PREFIX/SBINDIR/apiaryd),
#   without the DESTDIR.
set -euo pipefail

if [ $# -ne 4 ]; then
        echo "Usage: $0 BUILD_ROOT TEMPLATE_DIR PKGCONFIG_DIR APIARYD" >&2
        exit 2
fi
build=$1
template=$2
pcdir=$3
apiaryd_path=$4

for tool in meson pkg-config; do
        if ! command -v "$tool" >/dev/null; then
                echo "SKIP: $tool is not installed"
                exit 77
        fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/apiary-sdk-XXXXXX")
dest=$tmp/dest
bus_dir=
bus_pid=
apiaryd_pid=

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
        if [ -n "$apiaryd_pid" ]; then
                kill -TERM "$apiaryd_pid" 2>/dev/null || true
                wait "$apiaryd_pid" 2>/dev/null || true
        fi
        if [ -n "$bus_pid" ]; then
                kill -TERM "$bus_pid" 2>/dev/null || true
                wait "$bus_pid" 2>/dev/null || true
        fi
        if [ -n "$bus_dir" ] && [ "$bus_dir" != "$tmp" ]; then
                rm -rf "$bus_dir"
        fi
        rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
        echo "FAIL: $*" >&2
        for f in "$tmp"/log "$tmp"/apiaryd.log; do
                [ -s "$f" ] && { echo "--- ${f##*/}:" >&2; tail -n 40 "$f" >&2; }
        done
        exit 1
}

# Runs a command with its output in $tmp/log, shown only when it fails.
quietly() {
        "$@" >"$tmp/log" 2>&1 || fail "$* (exit status $?)"
}

# ---- 1. install ----

quietly meson install -C "$build" --destdir "$dest" --no-rebuild --quiet
pc=$dest$pcdir/apiary-plugin.pc
[ -f "$pc" ] || fail "meson install did not install $pcdir/apiary-plugin.pc"
echo "ok 1 - meson install --destdir"

# ---- 2. pkg-config ----

export PKG_CONFIG_LIBDIR=$dest$pcdir PKG_CONFIG_PATH='' PKG_CONFIG_SYSROOT_DIR=$dest
var() {
        pkg-config --variable="$1" apiary-plugin
}

cflags=$(pkg-config --cflags apiary-plugin | xargs) || fail "pkg-config --cflags apiary-plugin"
includedir=$(var includedir)
[ "$cflags" = "-I$includedir" ] || fail "Cflags: \"$cflags\", expected -I$includedir"
[[ "$includedir" == "$dest"/* ]] || fail "includedir=$includedir is not inside the DESTDIR (is pkg-config pkgconf?)"
[ -f "$includedir/apiary/plugin.h" ] || fail "$includedir/apiary/plugin.h is not installed"
libs=$(pkg-config --libs apiary-plugin | xargs) || fail "pkg-config --libs apiary-plugin"
[ -z "$libs" ] || fail "Libs: \"$libs\", expected none: plugins link against nothing"

worker=$(var apiary_worker)
plugindir=$(var plugindir)
[[ "$worker" == "$dest"/* && -x "$worker" ]] || fail "apiary_worker=$worker is not an executable inside the DESTDIR"
[[ "$plugindir" == "$dest"/* && -f "$plugindir/echo.so" ]] || fail "plugindir=$plugindir does not hold echo.so"

abi=$(var abi_version)
header_abi=$(printf '#include <apiary/plugin.h>\nAPIARY_PLUGIN_ABI_VERSION\n' |
        ${CC:-cc} -E -P -I"$includedir" -x c - | tail -n 1)
[[ -n "$abi" && "${header_abi%[uU]}" = "$abi" ]] ||
        fail "abi_version=$abi in the .pc, APIARY_PLUGIN_ABI_VERSION is $header_abi in the installed header"
echo "ok 2 - apiary-plugin.pc: Cflags -I$includedir, no Libs, ABI $abi, plugindir and apiary_worker in the DESTDIR"

# ---- 3. the template ----

# Installed with the docs, file for file (a build directory inside the source copy is not).
installed_template=$(find "$dest" -type d -path '*/doc/apiary/examples/plugin-template')
[ -n "$installed_template" ] || fail "examples/plugin-template is not installed"
for f in "$template"/*; do
        [ -f "$f" ] || continue
        cmp -s "$f" "$installed_template/${f##*/}" || fail "${f##*/} of the template is not installed (include/meson.build)"
done

quietly meson setup "$tmp/template" "$template" -Dwerror=true
quietly meson compile -C "$tmp/template"
quietly meson test -C "$tmp/template" --print-errorlogs
quietly meson install -C "$tmp/template" --quiet
[ -f "$plugindir/reverse.so" ] || fail "the template did not install reverse.so into plugindir=$plugindir"
exported=$(nm -D --defined-only "$plugindir/reverse.so" | awk '{ printf "%s%s", sep, $3; sep = " " }')
[ "$exported" = "apiary_plugin" ] || fail "reverse.so exports \"$exported\", expected apiary_plugin alone"
echo "ok 3 - examples/plugin-template: built -Dwerror=true, its --oneshot test passed, reverse.so installed"

# ---- 4. apiaryd on a private bus ----

apiaryd=$dest$apiaryd_path
[ -x "$apiaryd" ] || fail "$apiaryd is not installed"

cat >"$tmp/apiary.conf" <<EOF
[Apiary]
PluginDirectory=$plugindir

[Pool reverse]
Plugin=reverse.so
Workers=1

[Pool reverse Plugin]
MaxSize=8
EOF
"$apiaryd" --check-config --config="$tmp/apiary.conf" >"$tmp/log" 2>&1 || fail "apiaryd --check-config"

# A socket path must fit in sun_path (108 bytes).
bus_dir=$tmp
if [ ${#bus_dir} -gt 90 ]; then
        bus_dir=$(mktemp -d /tmp/apiary-sdk-bus-XXXXXX)
fi
cat >"$tmp/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$bus_dir/bus</listen>
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
address=
for _ in $(seq 100); do
        if [ -s "$tmp/bus.address" ]; then
                address=unix:path=$bus_dir/bus
                break
        fi
        kill -0 "$bus_pid" 2>/dev/null || break
        sleep 0.05
done
[ -n "$address" ] || fail "the private dbus-daemon did not start: $(cat "$tmp/bus.log")"

"$apiaryd" --config="$tmp/apiary.conf" --worker-path="$worker" --bus="$address" </dev/null >"$tmp/apiaryd.log" 2>&1 &
apiaryd_pid=$!
owned=
for _ in $(seq 200); do
        kill -0 "$apiaryd_pid" 2>/dev/null || fail "apiaryd exited"
        if busctl --address="$address" --timeout=2 call org.freedesktop.DBus /org/freedesktop/DBus \
                org.freedesktop.DBus NameHasOwner s org.apiary.Apiary1 2>/dev/null | grep -q true; then
                owned=1
                break
        fi
        sleep 0.05
done
[ -n "$owned" ] || fail "apiaryd did not take org.apiary.Apiary1"

run_task() {
        busctl --address="$address" --timeout=30 call org.apiary.Apiary1 /org/apiary/Apiary1 \
                org.apiary.Apiary1.Manager Run 'saya{sv}' reverse "$@" 0
}

# "abc" -> "cba"; Run queues the task until the worker is ready.
out=$(run_task 3 97 98 99 2>&1) || fail "Run(reverse, \"abc\"): $out"
[ "$out" = "ay 3 99 98 97" ] || fail "Run(reverse, \"abc\"): got \"$out\", expected \"ay 3 99 98 97\""
echo "ok 4 - apiaryd ran a task through the installed reverse.so: abc -> cba"

# 9 bytes against MaxSize=8 from [Pool reverse Plugin]: the plugin's reason reaches the caller.
status=0
out=$(run_task 9 1 2 3 4 5 6 7 8 9 2>&1) || status=$?
[ "$status" -ne 0 ] || fail "Run(reverse, 9 bytes) succeeded with MaxSize=8: $out"
[[ "$out" == *"payload of 9 bytes is longer than MaxSize=8"* ]] ||
        fail "Run(reverse, 9 bytes): \"$out\", expected the plugin's reason"
echo "ok 5 - apiaryd: a task over MaxSize=8 fails with the plugin's reason"

kill -TERM "$apiaryd_pid"
status=0
wait "$apiaryd_pid" || status=$?
apiaryd_pid=
[ "$status" -eq 0 ] || fail "apiaryd exited with status $status after SIGTERM"
echo "ok 6 - apiaryd stopped"
