#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Runs the shell sessions of a page of docs/ as a reader would, and compares their output.

    check-doc-console.py DOC EXAMPLE_CONFIG

with $APIARYD, $APIARY_WORKER_PATH and $APIARY_PLUGIN_DIR set (meson's integration_env).

The sessions are the ```console blocks that follow a line "<!-- doc-test -->" (others are not
run: the page says why they cannot be, e.g. a PID or a time of day). Any other block that follows
a line "<!-- doc-test: FILE -->" (a script the page shows, a drop-in) is written to FILE when the
page reaches it, relative to the directory the commands run in, which holds apiary.conf and
apiary.conf.d/ (so "apiary.conf.d/60-nap.conf" is a drop-in, read at the next reload). In a block, a line
"$ COMMAND" is a command (a line ending in a backslash goes on to the next), and the lines after it,
up to the next command, are its expected output, stdout and stderr together:
  * a line that is "…" alone stands for any number of lines, none included;
  * "…" within a line stands for any text on it;
  * a run of spaces matches any run of spaces (busctl's columns widen with their values).
Each command runs in bash, in order, against one apiaryd serving EXAMPLE_CONFIG (the example
configuration, as ./tools/run serves it) on a private bus, started afresh, with A and
$APIARY_BUS_ADDRESS set to the bus's address and the build's apiaryctl first on PATH; a command
"A=…" is the page telling the reader to set it, and is skipped.

Exit status: 0 if every command printed what the page says, 1 if not or if the page has no tested
session, 77 (skip) without busctl or dbus-daemon.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MARK = "<!-- doc-test -->"
FILE_MARK = re.compile(r"<!-- doc-test: (\S+) -->$")


def sessions(path):
    """The tested blocks of PATH, in order: (line number, [(line, command, [expected lines])]) for
    a session, (line number, FILE, text) for a file."""
    lines = open(path, encoding="utf-8").read().split("\n")
    out = []
    i = 0
    while i < len(lines):
        file_mark = FILE_MARK.match(lines[i].strip())
        if file_mark and i + 1 < len(lines) and lines[i + 1].startswith("```"):
            j = i + 2
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append((i + 2, file_mark.group(1), "\n".join(lines[i + 2:j]) + "\n"))
            i = j
        elif lines[i].strip() == MARK and i + 1 < len(lines) and lines[i + 1].startswith("```console"):
            start = i + 2
            j = start
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            commands = []
            k = start
            while k < j:
                if lines[k].startswith("$ "):
                    cmd = lines[k][2:]
                    while cmd.endswith("\\") and k + 1 < j:
                        k += 1
                        cmd = cmd[:-1] + "\n" + lines[k]
                    commands.append((k + 1, cmd, []))
                elif commands:
                    commands[-1][2].append(lines[k])
                k += 1
            out.append((start, commands))
            i = j
        i += 1
    return out


def line_matches(pattern, line):
    # Columns (busctl's, a table's) widen with their longest value: spaces are compared as one.
    pattern, line = " ".join(pattern.split()), " ".join(line.split())
    if "…" not in pattern:
        return pattern == line
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("…")), line) is not None


def matches(expected, actual):
    """Whether ACTUAL (lines) is EXPECTED with its "…" lines standing for any lines."""
    if not expected:
        return not actual
    if expected[0] == "…":
        return any(matches(expected[1:], actual[n:]) for n in range(len(actual) + 1))
    return bool(actual) and line_matches(expected[0], actual[0]) and matches(expected[1:], actual[1:])


def main():
    doc, example = sys.argv[1], sys.argv[2]
    for tool in ("busctl", "dbus-daemon"):
        if not shutil.which(tool):
            print("SKIP: %s is not installed" % tool)
            return 77
    blocks = sessions(doc)
    if not any(len(b) == 2 for b in blocks):
        print("FAIL: %s has no session marked %s" % (doc, MARK))
        return 1

    tmp = tempfile.mkdtemp(prefix="apiary-doc-")
    procs = []
    try:
        conf = os.path.join(tmp, "bus.conf")
        with open(conf, "w") as f:
            f.write('<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
                    ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
                    "<busconfig><type>session</type><listen>unix:path=%s/bus</listen><auth>EXTERNAL</auth>"
                    '<policy context="default"><allow send_destination="*" eavesdrop="true"/>'
                    '<allow eavesdrop="true"/><allow own="*"/></policy></busconfig>\n' % tmp)
        bus = subprocess.Popen(["dbus-daemon", "--nofork", "--nopidfile", "--nosyslog", "--config-file=" + conf,
                                "--print-address=1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(bus)
        address = bus.stdout.readline().strip()
        # The example configuration as ./tools/run serves it (a drop-in, as tools/run writes it):
        # plugins of the build tree, the demo pools as the user running the test, not nobody.
        shutil.copy(example, os.path.join(tmp, "apiary.conf"))
        os.mkdir(os.path.join(tmp, "apiary.conf.d"))
        with open(os.path.join(tmp, "apiary.conf.d", "50-build-tree.conf"), "w") as f:
            f.write("[Apiary]\nPluginDirectory=%s\n[Pool echo]\nUser=\n[Pool echo-io]\nUser=\n"
                    % os.environ["APIARY_PLUGIN_DIR"])
        log = open(os.path.join(tmp, "apiaryd.log"), "w")
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
        apiaryd = subprocess.Popen([os.environ["APIARYD"], "--config=" + os.path.join(tmp, "apiary.conf"),
                                    "--bus=" + address, "--worker-path=" + os.environ["APIARY_WORKER_PATH"]],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        procs.append(apiaryd)
        env["A"] = address
        # apiaryctl as the page writes it, reaching this apiaryd: the build's, on this bus.
        env["APIARY_BUS_ADDRESS"] = address
        env["PATH"] = ":".join([os.path.dirname(os.environ["APIARYCTL"])] if os.environ.get("APIARYCTL") else [])
        env["PATH"] += ":/usr/bin:/bin:" + os.environ.get("PATH", "")
        for _ in range(200):
            r = subprocess.run(["busctl", "--address=" + address, "get-property", "org.apiary.Apiary1",
                                "/org/apiary/Apiary1", "org.apiary.Apiary1.Manager", "State"],
                               capture_output=True, text=True)
            if r.stdout.strip() == 's "running"':
                break
            time.sleep(0.05)
        else:
            print("FAIL: apiaryd did not come up:\n" + open(log.name).read())
            return 1

        failed = n = 0
        for block in blocks:
            if len(block) == 3:
                name = os.path.normpath(os.path.join(tmp, block[1]))
                if not name.startswith(tmp + "/"):
                    print("FAIL: %s:%d: %s is outside the session's directory" % (doc, block[0], block[1]))
                    return 1
                with open(name, "w") as f:
                    f.write(block[2])
                continue
            for line, cmd, expected in block[1]:
                if re.match(r"A=", cmd):
                    continue
                n += 1
                r = subprocess.run(["bash", "-c", cmd], cwd=tmp, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, timeout=60)
                actual = r.stdout.rstrip("\n").split("\n") if r.stdout else []
                while expected and expected[-1] == "":
                    expected = expected[:-1]
                if matches(expected, actual):
                    print("ok %d - %s:%d: %s" % (n, os.path.basename(doc), line, cmd.split("\n")[0][:80]))
                else:
                    failed += 1
                    print("not ok %d - %s:%d: %s\n--- the page says:\n%s\n--- it printed:\n%s"
                          % (n, os.path.basename(doc), line, cmd, "\n".join(expected), "\n".join(actual)))
        return 1 if failed else 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
