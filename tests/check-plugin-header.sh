#!/bin/bash
# SPDX-License-Identifier: MIT
#
# include/apiary/plugin.h is the whole SDK, so it must build any plugin warning-free, whatever the
# plugin's language and flags:
#   1. alone, as C99 and C11 with -Wall -Wextra -Werror -pedantic (and a few more);
#   2. alone, as C++11 and C++17 with -Wall -Wextra -Werror -pedantic;
#   3. a plugin that uses every macro (APIARY_PLUGIN_DEFINE, APIARY_HOST_HAS, APIARY_PRINTF...),
#      built as C99 and as C++11 with -fvisibility=hidden, exports apiary_plugin alone and runs a
#      task under apiary-worker --oneshot (whose stdout carries the result alone, even when the
#      plugin prints);
#   4. apiary-plugin.pc's abi_version is the header's APIARY_PLUGIN_ABI_VERSION.
#
# Usage: check-plugin-header.sh CC CXX INCLUDE_DIR APIARY_PLUGIN_PC APIARY_WORKER
#   CC may be a command with arguments (ccache cc). CXX is empty when meson found no C++ compiler:
#   tools/deps installs g++, and without it this check fails rather than skip the C++ half.
set -euo pipefail

if [ $# -ne 5 ]; then
        echo "Usage: $0 CC CXX INCLUDE_DIR APIARY_PLUGIN_PC APIARY_WORKER" >&2
        exit 2
fi
read -r -a cc <<<"$1"
read -r -a cxx <<<"$2"
include=$3
pc=$4
worker=$5

tmp=$(mktemp -d "${TMPDIR:-/tmp}/apiary-check-header-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() {
        echo "FAIL: $*" >&2
        [ -s "$tmp/log" ] && { echo "--- compiler output:" >&2; cat "$tmp/log" >&2; }
        exit 1
}

[ ${#cxx[@]} -gt 0 ] || fail "no C++ compiler found (tools/deps installs g++)"

c_flags=(-Wall -Wextra -Werror -pedantic -Wstrict-prototypes -Wmissing-prototypes -Wundef -Wshadow -Wcast-qual)
cxx_flags=(-Wall -Wextra -Werror -pedantic -Wundef -Wshadow -Wcast-qual -Wold-style-cast)

# ---- 1, 2. the header alone ----

echo '#include <apiary/plugin.h>' >"$tmp/alone.c"
cp "$tmp/alone.c" "$tmp/alone.cc"
n=0
for std in c99 c11; do
        "${cc[@]}" -std=$std "${c_flags[@]}" -I"$include" -fsyntax-only "$tmp/alone.c" >"$tmp/log" 2>&1 ||
                fail "the header alone, as $std"
        echo "ok $((n += 1)) - the header alone compiles as -std=$std ${c_flags[*]}"
done
for std in c++11 c++17; do
        "${cxx[@]}" -std=$std "${cxx_flags[@]}" -I"$include" -fsyntax-only "$tmp/alone.cc" >"$tmp/log" 2>&1 ||
                fail "the header alone, as $std"
        echo "ok $((n += 1)) - the header alone compiles as -std=$std ${cxx_flags[*]}"
done

# ---- 3. a plugin in each language ----

# Returns "LANGUAGE:" + the payload if the host has submit() (APIARY_HOST_HAS), and logs through
# the printf-checked host->log().
# No casts but to void, so that the same source passes -Wold-style-cast as C++.
cat >"$tmp/plugin.c" <<'EOF'
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <apiary/plugin.h>

static const struct apiary_host *the_host;

static int t_init(const struct apiary_host *host, void **ret_state) {
        the_host = host;
        puts("on stdout, which --oneshot keeps for the result: this goes to stderr");
        host->log(host, APIARY_LOG_DEBUG, "ABI %" PRIu32 ", %zu config entries", host->abi_version, host->n_config);
        *ret_state = NULL;
        return 0;
}

static int t_run(void *state, apiary_task *task) {
        const char *prefix = APIARY_HOST_HAS(the_host, submit) ? PLUGIN_LANG ":" : "old-host:";
        size_t n, p = strlen(prefix);
        const void *payload = the_host->task_payload(task, &n);
        char out[256];

        (void) state;
        if (p + n > sizeof(out))
                return the_host->task_fail(task, "payload of %zu bytes is too long", n);
        memcpy(out, prefix, p);
        if (n > 0)
                memcpy(out + p, payload, n);
        return the_host->task_return(task, out, p + n);
}

static void t_fini(void *state) {
        (void) state;
}
EOF
cat "$tmp/plugin.c" - >"$tmp/plugin-c.c" <<'EOF'
APIARY_PLUGIN_DEFINE = {
        .abi_version = APIARY_PLUGIN_ABI_VERSION,
        .struct_size = sizeof(struct apiary_plugin),
        .name = "header-c",
        .version = "1.0",
        .init = t_init,
        .run = t_run,
        .fini = t_fini,
        .flags = APIARY_PLUGIN_FORK_SAFE,
};
EOF
# C++11 has no designated initializers: every field, in order (a field appended to the struct
# must be added here, as in any C++ plugin built with -Wextra -Werror).
cat "$tmp/plugin.c" - >"$tmp/plugin-cxx.cc" <<'EOF'
APIARY_PLUGIN_DEFINE = {
        APIARY_PLUGIN_ABI_VERSION,
        sizeof(struct apiary_plugin),
        "header-cxx",
        "1.0",
        t_init,
        t_run,
        t_fini,
        APIARY_PLUGIN_FORK_SAFE,
};
EOF

check_plugin() {
        local lang=$1 so=$2 exported out

        exported=$(nm -D --defined-only "$so" | awk '{ printf "%s%s", sep, $3; sep = " " }')
        [ "$exported" = "apiary_plugin" ] || fail "the $lang plugin exports \"$exported\", expected apiary_plugin alone"
        out=$(printf 'payload' | "$worker" --oneshot "$so" --set Key=value 2>"$tmp/log") ||
                fail "the $lang plugin under apiary-worker --oneshot: exit status $?"
        [ "$out" = "$lang:payload" ] || fail "the $lang plugin returned \"$out\", expected \"$lang:payload\""
}

"${cc[@]}" -std=c99 "${c_flags[@]}" -DPLUGIN_LANG='"c"' -I"$include" -fPIC -shared -fvisibility=hidden \
        -o "$tmp/plugin-c.so" "$tmp/plugin-c.c" >"$tmp/log" 2>&1 || fail "a C99 plugin"
check_plugin c "$tmp/plugin-c.so"
echo "ok $((n += 1)) - a C99 plugin builds warning-free, exports apiary_plugin alone, and runs"

"${cxx[@]}" -std=c++11 "${cxx_flags[@]}" -DPLUGIN_LANG='"cxx"' -I"$include" -fPIC -shared -fvisibility=hidden \
        -o "$tmp/plugin-cxx.so" "$tmp/plugin-cxx.cc" >"$tmp/log" 2>&1 || fail "a C++11 plugin"
check_plugin cxx "$tmp/plugin-cxx.so"
echo "ok $((n += 1)) - a C++11 plugin builds warning-free, exports apiary_plugin alone, and runs"

# ---- 4. the .pc's ABI version ----

header_abi=$(printf '#include <apiary/plugin.h>\nAPIARY_PLUGIN_ABI_VERSION\n' |
        "${cc[@]}" -E -P -I"$include" -x c - | tail -n 1)
header_abi=${header_abi%[uU]}
pc_abi=$(sed -n 's/^abi_version=//p' "$pc")
[[ -n "$pc_abi" && "$pc_abi" = "$header_abi" ]] ||
        fail "apiary-plugin.pc says abi_version=$pc_abi, the header APIARY_PLUGIN_ABI_VERSION $header_abi"
echo "ok $((n += 1)) - apiary-plugin.pc: abi_version=$pc_abi, as in the header"
echo "1..$n"
