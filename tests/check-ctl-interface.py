#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# apiaryctl's commands and options are the same set in all the places that list them:
#   apiaryctl --help, docs/apiaryctl.md, man/apiaryctl.1.scd, and the bash and zsh completions
#   (shell-completion/). Each source is read its own way; every difference is reported, named
#   by what is missing where. zsh -n checks the zsh file's syntax if zsh is installed.
#
# Usage: check-ctl-interface.py APIARYCTL SRCDIR
# Exit status: 0 if all agree, 1 if not.
import os
import re
import shutil
import subprocess
import sys

OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])(?![\w-])")


def from_help(apiaryctl):
    text = subprocess.run([apiaryctl, "--help"], check=True, stdout=subprocess.PIPE, text=True).stdout
    commands, options = text.split("\nOptions:\n", 1)
    verbs = set(re.findall(r"^  ([a-z][a-z-]*)(?= |$)", commands, re.M))
    opts = set()
    for line in options.splitlines():
        spec = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        if spec.startswith("-"):
            opts.update(OPTION.findall(spec))
    return verbs, opts


def from_markdown(path):
    text = open(path, encoding="utf-8").read().replace("\\|", "/")
    verbs = {m.split()[0] for m in re.findall(r"\*\*`([^`]*)`\*\*", text) if re.match(r"[a-z]", m)}
    # The control commands are a table: its first column.
    control = text.split("### Pools and workers", 1)[1].split("\n#", 1)[0]
    for row in re.findall(r"^\| (`[^|]*)\|", control, re.M):
        verbs.update(m.split()[0] for m in re.findall(r"`([^`]*)`", row))
    opts = set()
    for row in re.findall(r"^\| (`-[^|]*)\|", text, re.M):
        for span in re.findall(r"`([^`]*)`", row):
            opts.update(OPTION.findall(span.split("=")[0].split("[")[0]))
    return verbs, opts


def from_man(path):
    text = open(path, encoding="utf-8").read()
    commands = text.split("\n# COMMANDS\n", 1)[1].split("\n# ", 1)[0]
    options = text.split("\n# OPTIONS\n", 1)[1].split("\n# ", 1)[0]
    verbs = set()
    for line in re.findall(r"^\*[a-z].*$", commands, re.M):
        verbs.update(re.findall(r"\*([a-z][a-z-]*)\*", line.split(" _")[0]))
    opts = set()
    for line in re.findall(r"^\*-.*$", options, re.M):
        opts.update(re.findall(r"\*(--?[a-zA-Z][a-z-]*)\*", line))
    return verbs, opts


def from_completion(path, verbs_name, opts_name):
    text = open(path, encoding="utf-8").read()

    def words(name):
        m = re.search(r"^%s=[\"(]([^\")]*)[\")]" % re.escape(name), text, re.M)
        if not m:
            raise SystemExit("FAIL: %s: no %s list" % (path, name))
        return m.group(1).split()

    verbs = set(words(verbs_name))
    opts = {o.rstrip("=") for o in words(opts_name)}
    return verbs, opts


def main():
    if len(sys.argv) != 3:
        print("Usage: %s APIARYCTL SRCDIR" % sys.argv[0], file=sys.stderr)
        return 2
    apiaryctl, src = sys.argv[1:]
    bash = os.path.join(src, "shell-completion/bash/apiaryctl")
    zsh = os.path.join(src, "shell-completion/zsh/_apiaryctl")
    sources = {
        "apiaryctl --help": from_help(apiaryctl),
        "docs/apiaryctl.md": from_markdown(os.path.join(src, "docs/apiaryctl.md")),
        "man/apiaryctl.1.scd": from_man(os.path.join(src, "man/apiaryctl.1.scd")),
        "shell-completion/bash/apiaryctl": from_completion(bash, "__apiaryctl_verbs", "__apiaryctl_opts"),
        "shell-completion/zsh/_apiaryctl": from_completion(zsh, "__apiaryctl_verbs", "__apiaryctl_opts"),
    }
    failed = False
    ref_verbs, ref_opts = sources["apiaryctl --help"]
    for name, (verbs, opts) in sources.items():
        for what, ref, got in (("command", ref_verbs, verbs), ("option", ref_opts, opts)):
            for x in sorted(ref - got):
                print("FAIL: %s: no %s %s (apiaryctl --help has it)" % (name, what, x))
                failed = True
            for x in sorted(got - ref):
                print("FAIL: %s: %s %s, which apiaryctl --help does not have" % (name, what, x))
                failed = True
    if shutil.which("zsh"):
        r = subprocess.run(["zsh", "-n", zsh], stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            print("FAIL: zsh -n %s: %s" % (zsh, r.stderr.strip()))
            failed = True
    else:
        print("# zsh is not installed: the zsh file's syntax is not checked")
    print("# %d commands and %d options, the same in %d places" % (len(ref_verbs), len(ref_opts), len(sources)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
