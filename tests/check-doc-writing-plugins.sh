#!/bin/bash
# SPDX-License-Identifier: MIT
#
# docs/writing-plugins.md, run as written, as root on a machine with nothing under /usr/local: its
# ```console and ```sh blocks marked <!-- doc-test --> are typed into one shell and their output
# compared with the page (tests/check-doc-console.py --shell; the marks are described there), so
# the paths it shows (/usr/local/...) are the real ones. The page installs Apiary with "sudo meson
# install -C build", builds and installs examples/plugin-template's reverse.so and the plugins it
# adds (delay.c, palindrome.c), runs them with apiary-worker --oneshot, under valgrind, and in
# /usr/local/sbin/apiaryd on a dbus-run-session bus, with busctl --user and apiaryctl --user.
#
# None of it reaches the machine. The script runs itself again under unshare, in a mount namespace
# of its own (nothing it mounts is seen outside) and a PID namespace of its own, whose first
# process it is (when it exits, the kernel kills every process the page left, apiaryd and its
# workers included). There:
#   * TMP (a directory made outside) is a tmpfs, so that nothing is left on disk;
#   * /usr is an overlay whose changes go to that tmpfs: meson install writes outside its prefix
#     too (systemd's unit directory /lib/systemd/system, that is /usr/lib/..., and the system
#     bus's /usr/share/dbus-1/), and none of it may stay;
#   * /usr/local is an empty tmpfs, as on a fresh Debian.
# HOME is TMP/home, and the page's checkout ~/src/apiary is a directory of symbolic links to the
# source tree's top-level entries, except build, a link to BUILD_ROOT, the build under test. The
# page's "meson setup build" runs there as written (a configured build directory: Meson says
# "Directory already configured" and exits 0). "meson compile -C build" there is not run, and
# "meson install -C build" is run with --no-rebuild: this is a test of the build it is given
# (meson test built it, with the test's depends), which must not change it. A shell function meson
# does this mapping, for that build directory only; every other meson command, the template's
# "meson setup build" and "meson compile -C build" included, is Meson itself. "sudo" is a
# function that runs its arguments: the script runs as root already. Both are exported, so that
# the shell that "dbus-run-session -- bash" starts has them too. The environment is a login's:
# HOME, PATH with /usr/local/sbin and /usr/local/bin, USER, LOGNAME, SHELL, LC_ALL=C.UTF-8, and
# nothing else (no DBUS_SESSION_BUS_ADDRESS or XDG_RUNTIME_DIR: the page's bus is
# dbus-run-session's), but TMPDIR=TMP/tmp, so that temporary files (meson's, valgrind's, the
# checker's) go to the tmpfs too, and APIARY_DOC_BUILD_ROOT, the build the meson function maps.
#
# "dbus-run-session -- bash" is run as written: the shell it starts reads the commands that
# follow, as it would from the reader's terminal. apiaryd, started in it with "&", is stopped at
# the end with the shell's process group (check-doc-console.py), and anything else by the end of
# the PID namespace.
#
# Usage: check-doc-writing-plugins.sh SOURCE_ROOT BUILD_ROOT
# Exit status 0 if the page printed what it says, 1 if not, 77 (skip) without root, unshare, an
# overlay file system, or a tool the page runs.
set -euo pipefail

if [ "${1-}" != --inside ]; then
        if [ $# -ne 2 ]; then
                echo "Usage: $0 SOURCE_ROOT BUILD_ROOT" >&2
                exit 2
        fi
        if [ "$(id -u)" -ne 0 ]; then
                echo "SKIP: the page installs into /usr/local with sudo: this test runs as root, in namespaces of its own"
                exit 77
        fi
        for tool in unshare meson ninja pkg-config cc busctl dbus-run-session valgrind gdb; do
                if ! command -v "$tool" >/dev/null; then
                        echo "SKIP: $tool is not installed"
                        exit 77
                fi
        done
        if ! err=$(unshare --mount --propagation private --pid --fork --kill-child --mount-proc true 2>&1); then
                echo "SKIP: cannot make mount and PID namespaces with unshare: $err"
                exit 77
        fi
        source=$(cd "$1" && pwd -P)
        build=$(cd "$2" && pwd -P)
        tmp=$(mktemp -d "${TMPDIR:-/tmp}/apiary-doc-plugins-XXXXXX")
        trap 'rm -rf "$tmp"' EXIT
        status=0
        # --kill-child: if unshare is killed (meson's timeout), so is the namespace's first process,
        # and with it everything in the namespace.
        unshare --mount --propagation private --pid --fork --kill-child --mount-proc \
                "$0" --inside "$tmp" "$source" "$build" || status=$?
        exit "$status"
fi

# ---- inside the namespaces: PID 1 ----

tmp=$2
source=$3
build=$4

# What the page left running: SIGTERM to all of it, SIGKILL by the kernel once this exits.
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
        local procs

        kill -TERM -1 2>/dev/null || true
        for _ in {1..100}; do
                procs=(/proc/[0-9]*)            # this shell's own glob: no process of its own
                [ ${#procs[@]} -le 1 ] && break
                sleep 0.05
        done
}
trap cleanup EXIT

mount -t tmpfs -o mode=0700 apiary-doc "$tmp"
mkdir "$tmp/usr" "$tmp/usr.work" "$tmp/home" "$tmp/tmp"
if ! err=$(mount -t overlay apiary-doc-usr -o "lowerdir=/usr,upperdir=$tmp/usr,workdir=$tmp/usr.work" /usr 2>&1); then
        echo "SKIP: cannot mount an overlay on /usr, to keep what meson install writes there: $err"
        exit 77
fi
mount -t tmpfs -o mode=0755 apiary-doc-local /usr/local

# ~/src/apiary: the checkout, with the build under test as its build/.
home=$tmp/home
mkdir -p "$home/src/apiary"
for f in "$source"/*; do
        [ "${f##*/}" = build ] || ln -s "$f" "$home/src/apiary/"
done
ln -s "$build" "$home/src/apiary/build"

# The environment of a root login, and the page's sudo and Meson (see the top of this file).
for v in $(compgen -e); do
        unset "$v" 2>/dev/null || true
done
export HOME=$home USER=root LOGNAME=root SHELL=/bin/bash LC_ALL=C.UTF-8 TMPDIR=$tmp/tmp \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export APIARY_DOC_BUILD_ROOT=$build
# shellcheck disable=SC2317  # called by the page
sudo() {
        "$@"
}
# shellcheck disable=SC2317  # called by the page
meson() {
        if { [ "${1-}" = compile ] || [ "${1-}" = install ]; } && [ "${2-}" = -C ] &&
                [ "$(cd "${3-}" 2>/dev/null && pwd -P)" = "$APIARY_DOC_BUILD_ROOT" ]; then
                [ "$1" = compile ] && return 0
                set -- "$@" --no-rebuild
        fi
        command meson "$@"
}
export -f sudo meson

status=0
/usr/bin/python3 "$source/tests/check-doc-console.py" --shell "$home/src/apiary" \
        "$source/docs/writing-plugins.md" || status=$?
if [ "$status" -ne 0 ] && [ -s "$home/src/reverse/apiaryd.log" ]; then
        echo "--- ~/src/reverse/apiaryd.log:"
        tail -n 40 "$home/src/reverse/apiaryd.log"
fi
exit "$status"
