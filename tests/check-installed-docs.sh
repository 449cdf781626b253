#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Installs the build into a temporary DESTDIR (meson install --destdir) and checks what an
# operator finds there:
#   (a) every link from an installed page to another page (a Markdown link to a .md file, or a
#       page named in the text as docs/NAME.md) leads to an installed page;
#   (b) every page the unit's Documentation= names is installed: file: paths, and man: pages when
#       the man pages are built (scdoc);
#   (c) the pages apiaryctl --help and the man pages name (docs/NAME.md) are installed;
#   (d) the configuration directory has the example and an empty apiary.conf.d/ for drop-ins.
#   (e) every other relative link of an installed page (the plugin guide's to the template's
#       files) leads to an installed file or directory, and the guide names no file of the
#       source tree's tests/.
#
# Usage: check-installed-docs.sh BUILD_DIR
# Exit status: 0 if everything is where it should be, 1 if not.
set -uo pipefail

if [ $# -ne 1 ]; then
        echo "Usage: $0 BUILD_DIR" >&2
        exit 2
fi
build=$1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/apiary-installed-docs-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

failed=0
fail() {
        echo "FAIL: $*" >&2
        failed=1
}

dest=$tmp/dest
if ! meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >"$tmp/install.log" 2>&1; then
        cat "$tmp/install.log" >&2
        echo "FAIL: meson install --destdir" >&2
        exit 1
fi

prefix=$(meson introspect "$build" --buildoptions | python3 -c '
import json, sys
print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
docdir=$dest$prefix/share/doc/apiary
[ -d "$docdir" ] || { echo "FAIL: nothing installed in $prefix/share/doc/apiary" >&2; exit 1; }
n_pages=0
n_links=0

# (a) The pages' links among themselves.
while IFS= read -r -d '' page; do
        n_pages=$((n_pages + 1))
        dir=$(dirname "$page")
        rel=${page#"$docdir"/}
        # [text](other.md) and [text](../other.md#anchor)
        while IFS= read -r target; do
                n_links=$((n_links + 1))
                [ -f "$dir/$target" ] || fail "$rel links to $target, which is not installed"
        done < <(grep -o '](\([^)#: ]*\.md\)' "$page" | sed 's/^](//')
        # "see docs/tasks.md": a page of the same documentation, named by its path in the sources
        while IFS= read -r named; do
                n_links=$((n_links + 1))
                [ -f "$docdir/${named#docs/}" ] || fail "$rel names $named, which is not installed"
        done < <(grep -o 'docs/[a-z/.-]*\.md' "$page" | sort -u)
done < <(find "$docdir" -name '*.md' -print0)

# (e) Links to anything else, relative to the page: [text](path) with no scheme.
while IFS= read -r -d '' page; do
        dir=$(dirname "$page")
        rel=${page#"$docdir"/}
        while IFS= read -r target; do
                n_links=$((n_links + 1))
                [ -e "$dir/$target" ] || fail "$rel links to $target, which is not installed"
        done < <(grep -o '](\([^)#: ]*\))' "$page" | sed 's/^](//; s/)$//' | grep -v '\.md$' | grep -v '^$')
        if grep -q 'tests/[a-z-]*\.\(c\|sh\|py\)' "$page" && [ "$rel" = writing-plugins.md ]; then
                fail "$rel names a file of the source tree's tests/, which is not installed"
        fi
done < <(find "$docdir" -name '*.md' -print0)

# (b) The units' Documentation=.
[ -n "$(find "$dest" -name apiary.service -path '*/system/*')" ] || fail "apiary.service is not installed"
n_man=$(find "$dest" -path '*/man/man*' -type f | wc -l)
for unit in $(find "$dest" -path '*/system/*' \( -name '*.service' -o -name '*.socket' \)); do
        for doc in $(sed -n 's/^Documentation=//p' "$unit"); do
                case $doc in
                file:*)
                        [ -f "$dest${doc#file:}" ] || fail "${unit##*/}: Documentation=$doc is not installed"
                        ;;
                man:*)
                        page=${doc#man:}
                        name=${page%(*}
                        section=${page#*(}
                        section=${section%)}
                        if [ "$n_man" -gt 0 ]; then
                                [ -f "$dest$prefix/share/man/man$section/$name.$section" ] ||
                                        fail "${unit##*/}: Documentation=$doc is not installed"
                        fi
                        ;;
                *) fail "${unit##*/}: Documentation=$doc is neither file: nor man:" ;;
                esac
                n_links=$((n_links + 1))
        done
        grep -q '^Documentation=' "$unit" || fail "${unit##*/} has no Documentation="
done
grep -q '^Documentation=man:apiaryd(8)' "$(find "$dest" -name apiary.service -path '*/system/*' | head -n 1)" ||
        fail "apiary.service's Documentation= does not start with man:apiaryd(8)"

# (c) What apiaryctl --help and the man pages send readers to.
{
        "$build/tools/apiaryctl/apiaryctl" --help
        cat "$(dirname "$0")"/../man/*.scd
} | grep -o 'docs/[a-z/.-]*\.md' | sort -u | while IFS= read -r named; do
        [ -f "$docdir/${named#docs/}" ] || echo "$named"
done >"$tmp/missing"
while IFS= read -r named; do
        fail "apiaryctl --help or a man page names $named, which is not installed"
done <"$tmp/missing"

# (d) /etc/apiary.
etc=$(find "$dest" -path '*/apiary/apiary.conf' -type f | head -n 1)
if [ -z "$etc" ]; then
        fail "the example configuration apiary.conf is not installed"
else
        [ -d "$etc.d" ] || fail "$(dirname "${etc#"$dest"}")/apiary.conf.d/ is not installed"
fi

echo "# $n_pages installed pages, $n_links links and names checked"
exit $failed
