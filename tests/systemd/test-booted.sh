#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Apiary as a real systemd service, end to end: boots systemd in a container (systemd-nspawn -b),
# installs Apiary into it as a package would (meson install of a --prefix=/usr build: unit, bus
# policy, activation file, configuration), and checks it through the container's own tools
# (systemctl, busctl, dbus-send, journalctl, systemd-analyze):
#    1. systemctl start returns only after READY=1: every pool is running by then, one of them
#       with a plugin that takes a second in init();
#    2. systemctl status shows STATUS=; NRestarts, MainPID, WatchdogUSec, StatusText;
#    3. busctl tree, introspect, get-property and a task (Run) on the system bus, with the
#       shipped policy;
#    4. an unprivileged user may read, and is refused control and tasks by apiaryd itself
#       (org.freedesktop.DBus.Error.AccessDenied with apiaryd's message, not the bus's);
#    5. the journal: what a plugin writes to stdout and stderr, tagged apiary-worker[POOL/SLOT];
#       apiaryd's lines about a worker name it; APIARY_POOL=, APIARY_SLOT=, APIARY_WORKER_PID=;
#    6. systemctl reload applies a new drop-in (a pool added) by the time it returns, and
#       leaves every other worker alone (same PIDs);
#    7. SIGKILL of apiaryd: systemd restarts it, and no old worker is left in the unit's cgroup;
#    8. the watchdog: a SIGSTOPped apiaryd is killed at WatchdogSec= (3s by a drop-in) and
#       restarted, again with no old worker left;
#    9. systemctl stop drains (a task in flight finishes and its caller gets the result) and
#       stops within TimeoutStopSec=, exit status 0;
#   10. D-Bus activation: a call to org.apiary.Apiary1 starts the stopped service;
#   11. systemd-analyze verify of the installed unit prints nothing;
#   12. systemd-analyze security: the exposure score is no worse than docs/security.md says.
#
# The container boots the host's own /usr (--directory=/ --volatile=yes: / is an empty tmpfs,
# /usr the host's, read-only), with Apiary's staging tree laid over /usr (--overlay-ro). /etc
# starts empty: systemd-sysusers creates the system users (messagebus among them) at boot.
# Nothing is written to the host but a temporary directory and the cgroups the container runs
# in; every mount is made in a mount namespace of the test's own, gone when the container is.
#
# Needs root, systemd-nspawn (systemd-container), systemd, dbus (dbus.service) and meson;
# exits 77 (skip) without them, or where the container cannot be set up at all (no mount or
# cgroup rights, e.g. an unprivileged CI container); with APIARY_TEST_SYSTEMD_REQUIRED=1, it fails
# instead.
#
# Usage: test-booted.sh SOURCE_ROOT [MESON_SETUP_OPTION...]
#   The options go to the meson setup of the build installed into the container (tests/systemd/
#   meson.build passes the sanitizers of the build under test).
set -euo pipefail

if [ $# -lt 1 ]; then
        echo "Usage: $0 SOURCE_ROOT [MESON_SETUP_OPTION...]" >&2
        exit 2
fi
src=$(realpath "$1")
shift
setup_options=("$@")

exec 3>&2

# APIARY_TEST_SYSTEMD_REQUIRED=1 (for a CI that is known to be able to run it) turns a skip into a
# failure, so that the test cannot quietly stop running.
skip() {
        if [ -n "${APIARY_TEST_SYSTEMD_REQUIRED:-}" ]; then
                echo "FAIL: cannot run, and APIARY_TEST_SYSTEMD_REQUIRED is set: $*" >&2
                exit 1
        fi
        echo "SKIP: $*"
        exit 77
}

[ "$(id -u)" -eq 0 ] || skip "needs root"
for tool in systemd-nspawn nsenter unshare meson findmnt; do
        command -v "$tool" >/dev/null || skip "$tool is not installed (tools/deps installs it)"
done
[ -x /usr/lib/systemd/systemd ] || skip "systemd is not installed"
[ -f /usr/lib/systemd/system/dbus.service ] || [ -f /lib/systemd/system/dbus.service ] ||
        skip "dbus.service is not installed (package dbus)"
unshare --mount --propagation=private sh -c 'mount -t tmpfs tmpfs /mnt' 2>/dev/null ||
        skip "cannot mount in a new mount namespace here"

# The exposure score of `systemd-analyze security apiary.service` recorded in docs/security.md:
# a change of the unit that makes it worse fails check 12 until the docs say so.
security_max=5.4

tmp=$(mktemp -d "${TMPDIR:-/tmp}/apiary-booted-XXXXXX")
dest=$tmp/dest
machine=apiary-test-$$
nspawn_pid=
pid1=
cgroups=()
test_start=$(date +%s)

# ---- helpers ----

log() {
        echo "# $*"
}

# Prints what is needed to understand a failure: the end of the unit's journal and the console.
# shellcheck disable=SC2317  # called from fail() and the EXIT trap
dump() {
        if [ -n "$pid1" ] && [ -d "/proc/$pid1" ]; then
                echo "--- journalctl -u apiary (last 60 lines):" >&2
                incontainer journalctl -u apiary --no-pager -n 60 >&2 || true
                echo "--- systemctl status apiary:" >&2
                incontainer systemctl status apiary --no-pager -n 0 >&2 || true
        fi
        if [ -s "$tmp/console.log" ]; then
                echo "--- container console (last 30 lines):" >&2
                tail -n 30 "$tmp/console.log" >&2
        fi
}

# Writes to fd 3, the test's stderr, so that a failure inside wait_for (which silences its
# command) is still seen.
fail() {
        {
                echo "FAIL: $*"
                dump
        } >&3 2>&3
        exit 1
}

# Runs a command in the container: all of its namespaces, a clean environment, a time limit.
# The process stays in the test's own cgroup, outside the container's (nsenter does not move it).
incontainer() {
        nsenter -t "$pid1" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
                SYSTEMD_COLORS=0 SYSTEMD_PAGER= timeout -k 5 60 "$@"
}

# The same, as the unprivileged test user.
asuser() {
        incontainer setpriv --reuid=apiarytest --regid=apiarytest --init-groups "$@"
}

# wait_for SECONDS DESCRIPTION COMMAND...: runs COMMAND every 100 ms until it succeeds.
wait_for() {
        local limit=$1 what=$2 deadline
        shift 2
        deadline=$(($(date +%s%N) + limit * 1000000000))
        until "$@" >/dev/null 2>&1; do
                [ "$(date +%s%N)" -lt "$deadline" ] || fail "timed out after ${limit}s waiting for $what"
                sleep 0.1
        done
}

ms_now() {
        echo $(($(date +%s%N) / 1000000))
}

show() {
        incontainer systemctl show -P "$1" apiary.service
}

show_unit() {
        incontainer systemctl show -P "$1" "$2"
}

bus_get() {
        incontainer busctl get-property org.apiary.Apiary1 "$@"
}

# The PIDs in the unit's cgroup, one per line, sorted, read inside the container (cgroup v1 or v2).
unit_pids() {
        local cg
        cg=$(show ControlGroup)
        [ -n "$cg" ] || return 0
        # shellcheck disable=SC2016  # expanded by the sh in the container
        incontainer sh -c '
                for root in /sys/fs/cgroup/unified /sys/fs/cgroup /sys/fs/cgroup/systemd; do
                        if [ -f "$root$1/cgroup.procs" ]; then
                                find "$root$1" -name cgroup.procs -exec cat {} +
                                exit 0
                        fi
                done' sh "$cg" | sort -n
}

# Every worker's PID as "POOL/SLOT PID" lines, from the bus.
worker_pids() {
        local pool slot
        for pool in "$@"; do
                for slot in $(incontainer busctl tree --list org.apiary.Apiary1 |
                                sed -n "s|^/org/apiary/Apiary1/pool/${pool//-/_2d}/\([0-9]*\)$|\1|p"); do
                        echo "$pool/$slot $(bus_get "/org/apiary/Apiary1/pool/${pool//-/_2d}/$slot" \
                                org.apiary.Apiary1.Worker PID | cut -d' ' -f2)"
                done
        done
}

state_is() {
        [ "$(show ActiveState)/$(show SubState)" = "$1" ]
}

# Predicates for wait_for.
main_pid_is_not() {
        [ "$(show MainPID)" != "$1" ]
}

restarted_from() {
        local main
        main=$(show MainPID)
        [ "$main" != 0 ] && [ "$main" != "$1" ] && state_is active/running
}

property_is() {
        [ "$(bus_get "$1" "$2" "$3")" = "$4" ]
}

# Waits for apiaryd to be restarted by systemd after OLD_MAIN died, then checks that nothing of
# the old process tree is left: every process in the unit's cgroup is the new apiaryd or one of
# its children, none is one of OLD_PIDS, and no process anywhere still names the old supervisor.
check_restarted() {
        local old_main=$1 old_pids=$2 restarts=$3 main pid ppid
        wait_for 20 "apiaryd to be restarted" restarted_from "$old_main"
        main=$(show MainPID)
        [ "$(show NRestarts)" = "$restarts" ] || fail "NRestarts=$(show NRestarts), expected $restarts"
        for pid in $(unit_pids); do
                grep -qx "$pid" <<<"$old_pids" && fail "process $pid of the old apiaryd is still in the unit's cgroup"
                [ "$pid" = "$main" ] && continue
                ppid=$(incontainer ps -o ppid= -p "$pid" | tr -d ' ') || continue
                [ "$ppid" = "$main" ] || fail "process $pid in the unit's cgroup is not a child of apiaryd $main (parent $ppid)"
        done
        ! incontainer pgrep -f -- "--supervisor-pid=$old_main( |$)" >/dev/null ||
                fail "a worker of the old apiaryd $old_main is still running: $(incontainer pgrep -af -- "--supervisor-pid=$old_main")"
        echo "$main"
}

# ---- the container's cgroups ----

# nspawn, with --keep-unit --register=no, runs the container in the cgroup it is started in, which
# must be one of its own. Under systemd that is a transient scope; without it (PID 1 is not
# systemd: a CI container), a child of our cgroup in every hierarchy, made here and removed after.
make_cgroups() {
        local line ctrl path mnt dir
        local -a lines
        mapfile -t lines </proc/self/cgroup
        for line in "${lines[@]}"; do
                IFS=: read -r _ ctrl path <<<"$line"
                if [ -z "$ctrl" ]; then
                        mnt=$(findmnt -rn -t cgroup2 -o TARGET | head -n 1)
                else
                        # A v1 hierarchy is mounted with its controllers (or name=) among the options.
                        mnt=$(findmnt -rn -t cgroup -o TARGET,OPTIONS | while read -r t o; do
                                ok=1
                                for c in ${ctrl//,/ }; do
                                        [[ ",$o," == *",$c,"* ]] || ok=0
                                done
                                [ $ok -eq 1 ] && { echo "$t"; break; }
                        done)
                fi
                if [ -z "$mnt" ] || [ ! -d "$mnt$path" ]; then
                        continue
                fi
                dir=${mnt}${path%/}/$machine
                mkdir "$dir" 2>/dev/null || continue
                # cpuset (v1): a new group has no CPUs and takes no process until given some.
                for f in cpuset.cpus cpuset.mems; do
                        [ -f "$dir/$f" ] && cat "$(dirname "$dir")/$f" >"$dir/$f" 2>/dev/null
                done
                cgroups+=("$dir")
                echo "$dir" >>"$tmp/cgroups"
        done
        [ ${#cgroups[@]} -gt 0 ] || skip "no cgroup hierarchy to run the container in"
}

# Moves the calling (sub)shell into the cgroups of make_cgroups().
enter_cgroups() {
        local dir
        for dir in "${cgroups[@]}"; do
                echo "$BASHPID" >"$dir/cgroup.procs" 2>/dev/null || true
        done
}

# Kills whatever is left in our cgroups, then removes them (deepest first).
remove_cgroups() {
        local dir pid pids
        for dir in "${cgroups[@]}"; do
                [ -d "$dir" ] || continue
                for _ in 1 2 3 4 5 6 7 8 9 10; do
                        pids=$(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null)
                        [ -z "$pids" ] && break
                        for pid in $pids; do
                                kill -KILL "$pid" 2>/dev/null || true
                        done
                        sleep 0.2
                done
                find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
                [ -d "$dir" ] && echo "warning: could not remove cgroup $dir" >&2
        done
        return 0
}

# shellcheck disable=SC2317  # the EXIT trap
cleanup() {
        local status=$?
        trap - EXIT INT TERM
        if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
                # A clean shutdown first: nspawn exits when the container has powered off.
                if [ -n "$pid1" ] && [ -d "/proc/$pid1" ]; then
                        incontainer systemctl poweroff --no-block >/dev/null 2>&1 || true
                fi
                for _ in $(seq 1 100); do
                        kill -0 "$nspawn_pid" 2>/dev/null || break
                        sleep 0.1
                done
                # Then nspawn's own way: SIGTERM halts the container, a second one kills it.
                if kill -0 "$nspawn_pid" 2>/dev/null; then
                        echo "warning: the container did not power off, terminating systemd-nspawn" >&2
                        kill -TERM "$nspawn_pid" 2>/dev/null || true
                        sleep 3
                        kill -TERM "$nspawn_pid" 2>/dev/null || true
                        sleep 1
                        kill -KILL "$nspawn_pid" 2>/dev/null || true
                fi
                wait "$nspawn_pid" 2>/dev/null || true
        fi
        remove_cgroups
        rm -rf "$tmp"
        exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The EXIT trap does not run if this script is killed with SIGKILL, which meson test sends half a
# second after the SIGTERM of a timeout: a reaper in a session of its own waits for the script to
# end, and if the script did not get to remove $tmp, kills what is left of the container and
# removes its cgroups and $tmp.
# shellcheck disable=SC2016  # expanded by the reaper's bash
setsid -f bash -c '
        while kill -0 "$1" 2>/dev/null; do
                sleep 1
        done
        [ -d "$2" ] || exit 0
        pid=$(cat "$2/nspawn.pid" 2>/dev/null) &&
                [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd-nspawn ] && kill -KILL "$pid"
        while read -r dir; do
                for _ in 1 2 3 4 5 6 7 8 9 10; do
                        pids=$(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null)
                        [ -z "$pids" ] && break
                        kill -KILL $pids 2>/dev/null
                        sleep 0.2
                done
                find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
        done <"$2/cgroups"
        rm -rf "$2"' apiary-booted-reaper "$$" "$tmp" </dev/null >/dev/null 2>&1

# ---- install into a staging tree ----

# --prefix=/usr as a distribution package would have it. Units go to /usr/lib/systemd/system
# (where /lib/systemd/system points on a merged-/usr system) so that all of it is below /usr.
t0=$(ms_now)
meson setup "$tmp/build" "$src" --prefix=/usr --sysconfdir=/etc --localstatedir=/var \
        -Dsystemdsystemunitdir=/usr/lib/systemd/system "${setup_options[@]}" >"$tmp/build.log" 2>&1 ||
        { cat "$tmp/build.log" >&2; fail "meson setup of the staging build"; }
meson compile -C "$tmp/build" -j 2 >>"$tmp/build.log" 2>&1 ||
        { tail -n 40 "$tmp/build.log" >&2; fail "meson compile of the staging build"; }
meson install -C "$tmp/build" --destdir "$dest" --no-rebuild --quiet >>"$tmp/build.log" 2>&1 ||
        { tail -n 40 "$tmp/build.log" >&2; fail "meson install --destdir"; }
# The test plugin (not installed by meson): stdout/stderr output, a slow init().
install -D -m 0644 "$tmp/build/tests/plugins/control.so" "$dest/usr/lib/apiary-test/control.so"
for f in usr/sbin/apiaryd usr/lib/systemd/system/apiary.service \
        usr/share/dbus-1/system.d/org.apiary.Apiary1.conf \
        usr/share/dbus-1/system-services/org.apiary.Apiary1.service etc/apiary/apiary.conf; do
        [ -e "$dest/$f" ] || fail "meson install did not install /$f"
done
log "staging build and install: $(($(ms_now) - t0)) ms"

# With an empty /etc, the first boot enables every unit with an [Install] section by preset, and
# would start apiary.service before its configuration is there: the test starts it itself.
# nats-server and redis-server (tools/deps installs them for the shared-pool tests and benchmarks)
# would start with their packages' configurations and hold up the boot: the container needs neither.
printf 'disable apiary.service\ndisable apiary-exporter.socket\ndisable nats-server.service\ndisable redis-server.service\n' \
        >"$tmp/apiary-test.preset"

# ---- boot ----

t0=$(ms_now)
make_cgroups
mkdir -p /run/systemd/nspawn
nspawn_args=(
        --quiet
        --directory=/ --volatile=yes
        --machine="$machine"
        --register=no --keep-unit
        --private-network
        --console=pipe
        --link-journal=no
        # The first boot of an empty /etc would ask for a root password and a locale.
        --bind-ro=/dev/null:/etc/systemd/system/systemd-firstboot.service
        --bind-ro="$tmp/apiary-test.preset:/etc/systemd/system-preset/00-apiary-test.preset"
        --overlay-ro="/usr:$dest/usr:/usr"
        --boot
)
(
        # /run/systemd/nspawn must be a tmpfs (nspawn mounts below it); this one is our own, in a
        # mount namespace of our own, and goes away with it.
        if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null; then
                exec systemd-run --quiet --scope --collect -p Delegate=yes -- \
                        unshare --mount --propagation=private sh -c \
                        'mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn && exec systemd-nspawn "$@"' \
                        sh "${nspawn_args[@]}"
        fi
        enter_cgroups
        exec unshare --mount --propagation=private sh -c \
                'mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn && exec systemd-nspawn "$@"' \
                sh "${nspawn_args[@]}"
) </dev/null >"$tmp/console.log" 2>&1 &
nspawn_pid=$!
echo "$nspawn_pid" >"$tmp/nspawn.pid"

container_pid1() {
        local p
        kill -0 "$nspawn_pid" 2>/dev/null || fail "systemd-nspawn exited: $(tail -n 20 "$tmp/console.log")"
        p=$(pgrep -P "$nspawn_pid" -x systemd | head -n 1) || return 1
        [ -S "/proc/$p/root/run/systemd/private" ] || return 1
        pid1=$p
}
wait_for 30 "the container's systemd" container_pid1
booted() {
        incontainer systemctl is-system-running --wait | grep -qE '^(running|degraded)$'
}
wait_for 60 "the container to finish booting" booted
if [ "$(incontainer systemctl is-system-running || true)" != running ]; then
        log "the container is degraded (not our business): $(incontainer systemctl --failed --plain --no-legend | tr '\n' ' ')"
fi
log "container $machine (PID 1 is $pid1 on the host) booted in $(($(ms_now) - t0)) ms"

# The configuration, as the package installs it, plus the test's pools in a drop-in:
#   talk:  the control test plugin, whose init() takes a second (to see that systemctl start
#          waits for READY=1), and which writes to stdout and stderr;
#   nap:   the sleep plugin, for a task in flight while stopping;
#   cmd:   the exec plugin: a command per task, as the unit's sandbox allows.
tar -C "$dest/etc" -c apiary | incontainer tar -C /etc -x --no-same-owner
incontainer mkdir -p /etc/apiary/apiary.conf.d
incontainer tee /etc/apiary/apiary.conf.d/50-test.conf >/dev/null <<'EOF'
[Pool talk]
Plugin=/usr/lib/apiary-test/control.so
Workers=1

[Pool talk Plugin]
InitDelayMs=1000

[Pool nap]
Plugin=sleep.so
Workers=1

[Pool cmd]
Plugin=exec.so
Workers=1

[Pool cmd Plugin]
Command=/usr/bin/tr a-z A-Z
EOF
incontainer systemd-sysusers --inline 'u apiarytest - "Apiary test user"' >/dev/null 2>&1 ||
        fail "systemd-sysusers: cannot create the test user"
incontainer apiaryd --check-config || fail "apiaryd --check-config in the container"
[ "$(incontainer systemctl is-enabled apiary.service || true)" = disabled ] ||
        fail "apiary.service should be disabled in the container (preset), it is $(incontainer systemctl is-enabled apiary.service)"

# ---- 1. start ----

t0=$(ms_now)
incontainer systemctl start apiary.service || fail "systemctl start apiary"
took=$(($(ms_now) - t0))
# Read at once: all of it must hold the moment systemctl start returns.
state=$(bus_get /org/apiary/Apiary1 org.apiary.Apiary1.Manager State)
talk_state=$(bus_get /org/apiary/Apiary1/pool/talk org.apiary.Apiary1.Pool State)
state_is active/running || fail "after systemctl start: $(show ActiveState)/$(show SubState)"
[ "$state" = 's "running"' ] || fail "after systemctl start, Manager.State is $state"
[ "$talk_state" = 's "running"' ] || fail "after systemctl start, pool talk is $talk_state"
[ "$took" -ge 1000 ] || fail "systemctl start took ${took} ms, less than the 1 s init() of pool talk"
echo "ok 1 - systemctl start returns after READY=1 (${took} ms, with a 1 s init()); every pool running"

# ---- 2. status and properties ----

main=$(show MainPID)
status_text=$(show StatusText)
if ! [[ "$status_text" =~ ^5\ pools,\ ([0-9]+)/([0-9]+)\ workers\ ready$ ]] ||
        [ "${BASH_REMATCH[1]}" != "${BASH_REMATCH[2]}" ]; then
        fail "StatusText=\"$status_text\""
fi
incontainer systemctl status apiary.service --no-pager >"$tmp/status" || fail "systemctl status apiary: exit $?"
grep -qF "Status: \"$status_text\"" "$tmp/status" || fail "systemctl status does not show the status: $(cat "$tmp/status")"
grep -q "Active: active (running)" "$tmp/status" || fail "systemctl status: $(cat "$tmp/status")"
incontainer systemctl show -p NRestarts,MainPID,WatchdogUSec,StatusText apiary.service >"$tmp/show"
for line in NRestarts=0 WatchdogUSec=30s "MainPID=$main" "StatusText=$status_text"; do
        grep -qxF "$line" "$tmp/show" || fail "systemctl show has no $line: $(cat "$tmp/show")"
done
[ "$(incontainer cat "/proc/$main/comm")" = apiaryd ] || fail "MainPID $main is not apiaryd"
echo "ok 2 - systemctl status shows \"$status_text\"; NRestarts=0 MainPID=$main WatchdogUSec=30s"

# ---- 3. the API on the system bus ----

incontainer busctl tree org.apiary.Apiary1 >"$tmp/tree" || fail "busctl tree"
for p in /org/apiary/Apiary1 /org/apiary/Apiary1/pool/echo/0 /org/apiary/Apiary1/pool/talk/0; do
        grep -q -- "─$p$" "$tmp/tree" || fail "busctl tree has no $p: $(cat "$tmp/tree")"
done
incontainer busctl introspect org.apiary.Apiary1 /org/apiary/Apiary1 >"$tmp/introspect" || fail "busctl introspect"
for re in '^org\.apiary\.Apiary1\.Manager ' '^\.Run  *method  *saya{sv} '; do
        grep -q "$re" "$tmp/introspect" || fail "busctl introspect has no $re: $(cat "$tmp/introspect")"
done
[ "$(bus_get /org/apiary/Apiary1/pool/echo org.apiary.Apiary1.Pool State)" = 's "running"' ] ||
        fail "Pool echo State: $(bus_get /org/apiary/Apiary1/pool/echo org.apiary.Apiary1.Pool State)"
out=$(incontainer busctl call org.apiary.Apiary1 /org/apiary/Apiary1 org.apiary.Apiary1.Manager Run \
        'saya{sv}' echo 2 104 105 0) || fail "busctl call Run"
[ "$out" = "ay 2 104 105" ] || fail "Run echo hi returned: $out"
out=$(incontainer busctl call org.apiary.Apiary1 /org/apiary/Apiary1 org.apiary.Apiary1.Manager Run \
        'saya{sv}' cmd 2 104 105 0) || fail "busctl call Run cmd"
[ "$out" = "ay 2 72 73" ] || fail "Run cmd hi (tr a-z A-Z) returned: $out"
owner=$(incontainer busctl status --no-pager org.apiary.Apiary1 | sed -n 's/^PID=//p')
# The example's demo pools run as nobody, apiaryd as root.
echo_pid=$(bus_get /org/apiary/Apiary1/pool/echo/0 org.apiary.Apiary1.Worker PID | cut -d' ' -f2)
echo_user=$(incontainer stat -c %U "/proc/$echo_pid")
[ "$echo_user" = nobody ] || fail "the example's pool echo runs as \"$echo_user\", not nobody"
[ "$owner" = "$main" ] || fail "org.apiary.Apiary1 is owned by PID $owner, not by MainPID $main"
echo "ok 3 - busctl tree, introspect, get-property, call Run (echo, and exec running a command) on the system bus (name owned by MainPID)"

# apiary-exporter: installed (off here by the preset, in the .deb by dh_installsystemd
# --no-enable, which check-debian-package checks); once its socket is started, a scrape starts the
# service (as a dynamic user, on the system bus) and shows what the bus shows.
incontainer systemctl start apiary-exporter.socket || fail "systemctl start apiary-exporter.socket"
incontainer python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=10).read().decode())' \
        >"$tmp/metrics" || fail "scraping apiary-exporter at 127.0.0.1:9464"
grep -qx 'apiary_up 1' "$tmp/metrics" ||
        fail "apiary-exporter: apiary_up is not 1: $(incontainer journalctl --no-pager -u apiary-exporter.service -n 5)"
ready=$(bus_get /org/apiary/Apiary1/pool/echo org.apiary.Apiary1.Pool WorkersReady | cut -d' ' -f2)
grep -qx "apiary_workers_ready{pool=\"echo\"} $ready" "$tmp/metrics" ||
        fail "apiary-exporter: apiary_workers_ready{pool=\"echo\"} is not $ready: $(grep workers_ready "$tmp/metrics")"
[ "$(show_unit ActiveState apiary-exporter.service)" = active ] || fail "apiary-exporter.service did not start on the scrape"
incontainer systemctl stop apiary-exporter.socket apiary-exporter.service
echo "ok 3b - apiary-exporter: socket-activated, scraped on 127.0.0.1:9464 as the bus says"

# ---- 4. an unprivileged user ----

asuser busctl tree org.apiary.Apiary1 >/dev/null || fail "busctl tree as an unprivileged user"
[ "$(asuser busctl get-property org.apiary.Apiary1 /org/apiary/Apiary1/pool/echo org.apiary.Apiary1.Pool State)" = 's "running"' ] ||
        fail "get-property as an unprivileged user"
uid=$(incontainer id -u apiarytest)
# dbus-send prints the error name, busctl only the message.
refused() {
        local method=$1 path=$2 iface=$3
        shift 3
        local out
        out=$(asuser dbus-send --system --print-reply --dest=org.apiary.Apiary1 "$path" "$iface.$method" "$@" 2>&1) &&
                fail "$method as an unprivileged user succeeded: $out"
        # apiaryd's own refusal (its message), not the bus policy's.
        grep -q "^Error org.freedesktop.DBus.Error.AccessDenied: User $uid may not call $method()" <<<"$out" ||
                fail "$method as an unprivileged user: $out"
}
refused Reload /org/apiary/Apiary1 org.apiary.Apiary1.Manager
refused Stop /org/apiary/Apiary1/pool/echo org.apiary.Apiary1.Pool
refused Kill /org/apiary/Apiary1/pool/echo/0 org.apiary.Apiary1.Worker int32:9
refused Cancel /org/apiary/Apiary1 org.apiary.Apiary1.Manager uint64:1
# Run's a{sv} is beyond dbus-send: python3-dbus.
out=$(asuser python3 - <<'EOF'
import dbus
manager = dbus.Interface(dbus.SystemBus().get_object("org.apiary.Apiary1", "/org/apiary/Apiary1"),
                         "org.apiary.Apiary1.Manager")
try:
    manager.Run("echo", dbus.ByteArray(b"hi"), dbus.Dictionary({}, signature="sv"))
    print("succeeded")
except dbus.DBusException as e:
    print(e.get_dbus_name(), e.get_dbus_message())
EOF
) || fail "python3-dbus as an unprivileged user: $out"
grep -q "^org.freedesktop.DBus.Error.AccessDenied User $uid may not call Run()" <<<"$out" ||
        fail "Run as an unprivileged user: $out"
[ "$(bus_get /org/apiary/Apiary1/pool/echo org.apiary.Apiary1.Pool State)" = 's "running"' ] ||
        fail "pool echo is not running after the refused calls"
echo "ok 4 - an unprivileged user reads the state, and gets AccessDenied from apiaryd for Reload, Stop, Kill, Cancel, Run"

# ---- 5. the journal ----

talk_pid=$(bus_get /org/apiary/Apiary1/pool/talk/0 org.apiary.Apiary1.Worker PID | cut -d' ' -f2)
echo0_pid=$(bus_get /org/apiary/Apiary1/pool/echo/0 org.apiary.Apiary1.Worker PID | cut -d' ' -f2)
# "print hello journal"
out=$(incontainer busctl call org.apiary.Apiary1 /org/apiary/Apiary1 org.apiary.Apiary1.Manager Run \
        'saya{sv}' talk 19 112 114 105 110 116 32 104 101 108 108 111 32 106 111 117 114 110 97 108 0)
[ "$out" = "ay 7 112 114 105 110 116 101 100" ] || fail "Run talk print: $out"
journal_has() {
        incontainer journalctl --no-pager -o cat "$@" | grep -q .
}
wait_for 10 "the plugin's stderr line in the journal" \
        journal_has -u apiary.service -t 'apiary-worker[talk/0]' _PID="$talk_pid" MESSAGE='stderr: hello journal'
# No fflush() in the plugin: stdout must be line-buffered by the worker to get here while it runs.
wait_for 10 "the plugin's stdout line in the journal" \
        journal_has -u apiary.service -t 'apiary-worker[talk/0]' _PID="$talk_pid" MESSAGE='stdout: hello journal'
incontainer journalctl --no-pager -u apiary.service -o short >"$tmp/journal"
grep -q "apiary-worker\[talk/0\]\[$talk_pid\]: stdout: hello journal$" "$tmp/journal" ||
        fail "journalctl -u apiary does not show the plugin's output tagged with its pool and slot"
grep -q "apiaryd\[$main\]: echo/0\[$echo0_pid\]: Worker ready" "$tmp/journal" ||
        fail "journalctl -u apiary does not name the worker in apiaryd's \"Worker ready\": $(grep 'Worker ready' "$tmp/journal" | head -n 3)"
pools=$(incontainer journalctl --no-pager -u apiary.service -F APIARY_POOL | sort | tr '\n' ' ')
[ "$pools" = "cmd echo echo-io nap talk " ] || fail "APIARY_POOL= values in the journal: $pools"
echo_pools=$(incontainer journalctl --no-pager -u apiary.service APIARY_POOL=echo -o export \
        --output-fields=APIARY_POOL | grep -a '^APIARY_POOL=' | sort | uniq -c)
[[ "$echo_pools" =~ ^\ *[0-9]+\ APIARY_POOL=echo$ ]] || fail "journalctl APIARY_POOL=echo finds: $echo_pools"
incontainer journalctl --no-pager APIARY_POOL=echo APIARY_SLOT=0 APIARY_WORKER_PID="$echo0_pid" -o cat |
        grep -q "Worker ready (plugin echo" || fail "journalctl APIARY_POOL=echo APIARY_SLOT=0 APIARY_WORKER_PID=$echo0_pid has no \"Worker ready\""
# apiaryctl logs reads the same through sd-journal: a pool's lines, apiaryd's and its plugin's,
# and no other pool's; one slot's as JSON; the last ones under status; and new ones with -f.
logs=$(incontainer apiaryctl logs talk) || fail "apiaryctl logs talk"
grep -q "apiary-worker\[talk/0\]\[$talk_pid\]: stdout: hello journal$" <<<"$logs" ||
        fail "apiaryctl logs talk lacks the plugin's stdout: $logs"
grep -q "apiaryd\[$main\]: talk/0\[$talk_pid\]: Worker ready" <<<"$logs" ||
        fail "apiaryctl logs talk lacks apiaryd's \"Worker ready\": $logs"
! grep -q "echo/0\|\[nap/" <<<"$logs" || fail "apiaryctl logs talk shows other pools' lines: $logs"
incontainer apiaryctl logs talk/0 -n 2 -o json >"$tmp/logs.json" || fail "apiaryctl logs talk/0 -o json"
python3 - "$tmp/logs.json" <<'EOF' || fail "apiaryctl logs talk/0 -n 2 -o json: $(cat "$tmp/logs.json")"
import json, sys
entries = [json.loads(line) for line in open(sys.argv[1])]
assert len(entries) == 2, entries
for e in entries:
    assert e.get("SYSLOG_IDENTIFIER") == "apiary-worker[talk/0]" or \
        (e.get("APIARY_POOL"), e.get("APIARY_SLOT")) == ("talk", "0"), e
EOF
incontainer apiaryctl status talk | grep -q "stdout: hello journal$" ||
        fail "apiaryctl status talk does not show the pool's last journal lines"
incontainer apiaryctl logs -f -n 0 talk >"$tmp/follow" 2>&1 &
follow_pid=$!
sleep 0.5
# "print followed"
incontainer busctl call org.apiary.Apiary1 /org/apiary/Apiary1 org.apiary.Apiary1.Manager Run \
        'saya{sv}' talk 14 112 114 105 110 116 32 102 111 108 108 111 119 101 100 0 >/dev/null ||
        fail "busctl call Run talk print followed"
wait_for 10 "apiaryctl logs -f to print the new line" grep -q "stdout: followed$" "$tmp/follow"
# SIGTERM to apiaryctl itself: the job here is nsenter's parent, which would wait for it.
incontainer pkill -TERM -f '^apiaryctl logs -f' || fail "no apiaryctl logs -f to stop"
wait "$follow_pid" || fail "apiaryctl logs -f did not exit with status 0 on SIGTERM"
echo "ok 5 - journal: plugin stdout and stderr as apiary-worker[talk/0], workers named in apiaryd's lines, APIARY_POOL=/APIARY_SLOT=/APIARY_WORKER_PID=; apiaryctl logs (-n, -o json, -f) and status show them"

# ---- 6. reload ----

before=$(worker_pids echo echo-io talk nap cmd)
incontainer tee /etc/apiary/apiary.conf.d/60-added.conf >/dev/null <<'EOF'
[Pool added]
Plugin=echo.so
Workers=2
EOF
incontainer systemctl reload apiary.service || fail "systemctl reload apiary"
# At once: the reload is done when systemctl reload returns.
added=$(bus_get /org/apiary/Apiary1/pool/added org.apiary.Apiary1.Pool Workers 2>&1) ||
        fail "right after systemctl reload, there is no pool added: $added"
wait_for 10 "pool added to be running" \
        property_is /org/apiary/Apiary1/pool/added org.apiary.Apiary1.Pool State 's "running"'
after=$(worker_pids echo echo-io talk nap cmd)
[ "$before" = "$after" ] || fail "the workers of unchanged pools changed on reload: before: $before; after: $after"
if [ "$(show MainPID)" != "$main" ] || [ "$(show NRestarts)" != 0 ]; then
        fail "apiaryd itself was restarted by the reload"
fi
out=$(incontainer busctl call org.apiary.Apiary1 /org/apiary/Apiary1 org.apiary.Apiary1.Manager Run \
        'saya{sv}' added 2 104 105 0)
[ "$out" = "ay 2 104 105" ] || fail "Run on the added pool: $out"
# An invalid drop-in: systemctl reload fails and says why, and nothing changes.
printf '[Pool broken]\nPlugin=echo.so\nWorkers=many\n' |
        incontainer tee /etc/apiary/apiary.conf.d/70-broken.conf >/dev/null
if incontainer systemctl reload apiary.service >"$tmp/reload.out" 2>&1; then
        fail "systemctl reload succeeded with an invalid configuration"
fi
state_is active/running || fail "after a failed reload: $(show ActiveState)/$(show SubState)"
! bus_get /org/apiary/Apiary1/pool/broken org.apiary.Apiary1.Pool State >/dev/null 2>&1 ||
        fail "the invalid pool broken was created"
[ "$(worker_pids echo echo-io talk nap cmd)" = "$after" ] || fail "workers changed on a failed reload"
wait_for 10 "the reason of the failed reload in the journal" \
        journal_has -u apiary.service -g '70-broken.conf:3: \[Pool broken\] Workers=many'
incontainer rm /etc/apiary/apiary.conf.d/70-broken.conf
echo "ok 6 - systemctl reload: pool added by the time it returns, $(wc -l <<<"$after") other workers kept their PIDs; an invalid drop-in fails the reload and changes nothing"

# ---- 7. SIGKILL of apiaryd ----

old_pids=$(unit_pids)
[ "$(wc -l <<<"$old_pids")" -ge 6 ] || fail "only $(wc -l <<<"$old_pids") processes in the unit's cgroup: $old_pids"
incontainer kill -KILL "$main"
main=$(check_restarted "$main" "$old_pids" 1)
echo "ok 7 - SIGKILL of apiaryd: restarted by systemd (MainPID $main, NRestarts=1), none of $(wc -l <<<"$old_pids") old processes left"

# ---- 8. the watchdog ----

incontainer mkdir -p /etc/systemd/system/apiary.service.d
printf '[Service]\nWatchdogSec=3s\n' | incontainer tee /etc/systemd/system/apiary.service.d/50-test-watchdog.conf >/dev/null
incontainer systemctl daemon-reload
incontainer systemctl restart apiary.service
[ "$(show WatchdogUSec)" = 3s ] || fail "WatchdogUSec=$(show WatchdogUSec) with the drop-in"
main=$(show MainPID)
old_pids=$(unit_pids)
restarts=$(show NRestarts)
# apiaryd must be pinging: 3 periods go by without a restart.
sleep 4
[ "$(show MainPID)" = "$main" ] || fail "apiaryd was restarted while it was running normally with WatchdogSec=3s"
t0=$(ms_now)
incontainer kill -STOP "$main"
wait_for 15 "systemd to kill the stopped apiaryd" main_pid_is_not "$main"
took=$(($(ms_now) - t0))
# The 3s run from apiaryd's last ping, which sd-event sends every 1.5 to 2.25 s: systemd acts
# between 0.75 and 3 s after the SIGSTOP (plus the time to notice and kill).
if [ "$took" -lt 700 ] || [ "$took" -gt 5000 ]; then
        fail "apiaryd was gone ${took} ms after SIGSTOP, with WatchdogSec=3s"
fi
main=$(check_restarted "$main" "$old_pids" $((restarts + 1)))
wait_for 10 "systemd's \"Watchdog timeout\" in the journal" \
        journal_has -u apiary.service MESSAGE='apiary.service: Watchdog timeout (limit 3s)!'
incontainer rm /etc/systemd/system/apiary.service.d/50-test-watchdog.conf
incontainer systemctl daemon-reload
echo "ok 8 - watchdog: a SIGSTOPped apiaryd killed after ${took} ms (WatchdogSec=3s) and restarted, no old process left"

# ---- 9. stop ----

# A task in flight (1.5 s) when the stop begins: it finishes, and its caller gets the result.
incontainer busctl call --timeout=30 org.apiary.Apiary1 /org/apiary/Apiary1 org.apiary.Apiary1.Manager Run \
        'saya{sv}' nap 4 49 53 48 48 0 >"$tmp/nap.out" 2>&1 &
nap_call=$!
wait_for 10 "the nap task to run" property_is /org/apiary/Apiary1/pool/nap org.apiary.Apiary1.Pool TasksRunning "t 1"
main=$(show MainPID)
t0=$(ms_now)
incontainer systemctl stop apiary.service || fail "systemctl stop apiary"
took=$(($(ms_now) - t0))
wait "$nap_call" || fail "the task in flight during the stop: $(cat "$tmp/nap.out")"
[ "$(cat "$tmp/nap.out")" = "ay 4 49 53 48 48" ] || fail "the task in flight during the stop: $(cat "$tmp/nap.out")"
state_is inactive/dead || fail "after systemctl stop: $(show ActiveState)/$(show SubState)"
if [ "$(show ExecMainStatus)" != 0 ] || [ "$(show Result)" != success ]; then
        fail "after systemctl stop: ExecMainStatus=$(show ExecMainStatus) Result=$(show Result)"
fi
[ -z "$(unit_pids)" ] || fail "processes left after the stop: $(unit_pids)"
[ "$took" -lt 30000 ] || fail "systemctl stop took ${took} ms, TimeoutStopSec=30s"
# The journal is written asynchronously: a line may come in after systemctl has returned.
wait_for 10 "\"All workers stopped.\" in the journal" \
        journal_has -u apiary.service _PID="$main" MESSAGE='All workers stopped.'
# UBSan reports do not change an exit status; a sanitizer build would say so here.
if incontainer journalctl --no-pager -u apiary.service -o cat |
        grep -E 'AddressSanitizer|LeakSanitizer|runtime error:' >"$tmp/sanitizer"; then
        fail "sanitizer reports in the journal: $(head -n 20 "$tmp/sanitizer")"
fi
echo "ok 9 - systemctl stop: a task in flight finished, stopped in ${took} ms, exit status 0, Result=success"

# ---- 10. D-Bus activation ----

t0=$(ms_now)
out=$(incontainer busctl call --timeout=30 org.apiary.Apiary1 /org/apiary/Apiary1 org.apiary.Apiary1.Manager Run \
        'saya{sv}' echo 2 104 105 0) || fail "busctl call to the stopped service: $out"
[ "$out" = "ay 2 104 105" ] || fail "Run through activation returned: $out"
# The call is answered as soon as apiaryd owns its name and pool echo runs; READY=1 waits for the
# slow pool talk.
wait_for 10 "apiary.service to be running after activation" state_is active/running
activation_logged() {
        incontainer journalctl --no-pager -u dbus.service -o cat |
                grep -q "Activating via systemd: service name='org.apiary.Apiary1' unit='apiary.service'"
}
wait_for 10 "dbus-daemon to log the activation of apiary.service" activation_logged
echo "ok 10 - D-Bus activation: a call to org.apiary.Apiary1 started apiary.service and got its result ($(($(ms_now) - t0)) ms)"
incontainer systemctl stop apiary.service || fail "systemctl stop apiary (after activation)"
[ "$(show ExecMainStatus)" = 0 ] || fail "ExecMainStatus=$(show ExecMainStatus) after the second stop"

# ---- 11. systemd-analyze verify ----

out=$(incontainer systemd-analyze verify --man=no /usr/lib/systemd/system/apiary.service 2>&1) ||
        fail "systemd-analyze verify apiary.service: $out"
[ -z "$out" ] || fail "systemd-analyze verify apiary.service: $out"
echo "ok 11 - systemd-analyze verify apiary.service prints nothing"

# ---- 12. systemd-analyze security ----

incontainer systemd-analyze security --no-pager apiary.service >"$tmp/security" 2>&1 || true
score=$(sed -n 's/^→ Overall exposure level for apiary.service: \([0-9.]*\) .*/\1/p' "$tmp/security")
[ -n "$score" ] || fail "systemd-analyze security: $(cat "$tmp/security")"
sed 's/^/# /' "$tmp/security"
awk -v s="$score" -v m="$security_max" 'BEGIN { exit !(s <= m) }' ||
        fail "systemd-analyze security: exposure $score, worse than the $security_max of docs/security.md"
echo "ok 12 - systemd-analyze security apiary.service: exposure $score (at most $security_max)"

log "all checks passed in $(($(date +%s) - test_start)) s"
