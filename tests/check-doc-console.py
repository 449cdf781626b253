#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Runs the shell sessions of a page of docs/ as a reader would, and compares their output.

    check-doc-console.py DOC EXAMPLE_CONFIG
    check-doc-console.py --shell DIR DOC

The first form needs $APIARYD, $APIARY_WORKER_PATH and $APIARY_PLUGIN_DIR set (meson's
integration_env).

The sessions are the ```console blocks that follow a line "<!-- doc-test -->" (others are not
run: the page says why they cannot be, e.g. a PID or a time of day). Any other block that follows
a line "<!-- doc-test: FILE -->" (a script the page shows, a drop-in) is written to FILE when the
page reaches it, relative to the directory the commands run in, which holds apiary.conf and
apiary.conf.d/ (so "apiary.conf.d/60-nap.conf" is a drop-in, read at the next reload);
"<!-- doc-test: append to FILE -->" appends the block to FILE instead (the page says "add to
apiary.conf"). In a block, a line "$ COMMAND" is a command (a line ending in a backslash goes on
to the next), and the lines after it, up to the next command, are its expected output, stdout and
stderr together:
  * a line that is "…" alone stands for any number of lines, none included;
  * "…" within a line stands for any text on it;
  * a run of spaces matches any run of spaces (busctl's columns widen with their values).
The exit status of a console command is not checked (the page shows "echo $?" where it matters).
A ```sh block that follows "<!-- doc-test -->" is commands only, one a line (blank lines and
"# comments" skipped): each must end with exit status 0, and its output is not compared.

First form: each command runs in bash, in order, against one apiaryd serving EXAMPLE_CONFIG (the
example configuration, as ./tools/run serves it) on a private bus, started afresh, with A and
$APIARY_BUS_ADDRESS set to the bus's address and the build's apiaryctl first on PATH; a command
"A=…" is the page telling the reader to set it, and is skipped.

--shell DIR: no bus and no apiaryd of the checker's own; the page brings up what it needs. The
commands are typed, one after the other, into one bash started in DIR with the checker's
environment, as into a reader's terminal: cd, variables, functions, background jobs (%1) and $?
carry from one command to the next, and a command that starts a shell ("dbus-run-session --
bash") has the commands after it typed into that shell. The shell's stdout and stderr are one
file, the terminal; the output of a command is what reached it from the end of the command before
to the end of this one, a background job's included. FILEs are relative to the shell's current directory. A command that does not finish within 60
seconds ends the run (the shell's state is unknown from there). What the page left running is
sent SIGTERM at the end (the shell's process group).

Exit status: 0 if every command printed what the page says, 1 if not or if the page has no tested
session, 77 (skip) without busctl or dbus-daemon (first form).
"""
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MARK = "<!-- doc-test -->"
FILE_MARK = re.compile(r"<!-- doc-test: (append to )?(\S+) -->$")
COMMAND_TIMEOUT = 60


def commands_of(lines, first, kind):
    """The commands of a block's LINES, whose first is line FIRST of the page: [(line, command,
    [expected lines])] for a console block, [(line, command, None)] for an sh block."""
    commands = []
    k = 0
    while k < len(lines):
        text = lines[k]
        if kind == "console" and not text.startswith("$ "):
            if commands:
                commands[-1][2].append(text)
            k += 1
            continue
        if kind == "sh" and (not text.strip() or text.lstrip().startswith("#")):
            k += 1
            continue
        line = first + k
        cmd = text[2:] if kind == "console" else text
        # A backslash-newline is bash's own line continuation: the command is given to bash as is.
        while cmd.endswith("\\") and k + 1 < len(lines):
            k += 1
            cmd += "\n" + lines[k]
        commands.append((line, cmd, [] if kind == "console" else None))
        k += 1
    return commands


def sessions(path):
    """The tested blocks of PATH, in order: (line number, kind, [(line, command, [expected lines]
    or None)]) for a session, kind being "console" or "sh"; (line number, FILE, text, append) for
    a file."""
    lines = open(path, encoding="utf-8").read().split("\n")
    out = []
    i = 0
    while i < len(lines):
        mark = lines[i].strip()
        file_mark = FILE_MARK.match(mark)
        if (file_mark or mark == MARK) and i + 1 < len(lines) and lines[i + 1].startswith("```"):
            kind = lines[i + 1][3:].strip()
            start = i + 2
            j = start
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if file_mark:
                out.append((start, file_mark.group(2), "\n".join(lines[start:j]) + "\n", bool(file_mark.group(1))))
            elif kind in ("console", "sh"):
                out.append((start, kind, commands_of(lines[start:j], start, kind)))
            else:
                raise ValueError("%s:%d: %s marks a ```%s block; only ```console and ```sh blocks run"
                                 % (path, i + 1, MARK, kind))
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


class CommandLost(Exception):
    """A command that did not finish: (why, what it printed)."""


class Commands:
    """The first form: each command in a bash of its own, in DIRECTORY."""

    def __init__(self, directory, env):
        self.directory, self.env = directory, env

    def run(self, cmd):
        """(exit status, what it printed)."""
        try:
            r = subprocess.run(["bash", "-c", cmd], cwd=self.directory, env=self.env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            output = e.stdout or ""
            raise CommandLost("did not finish within %d seconds" % COMMAND_TIMEOUT,
                              output.decode(errors="replace") if isinstance(output, bytes) else output)
        return r.returncode, r.stdout

    def path(self, name):
        full = os.path.normpath(os.path.join(self.directory, name))
        if not full.startswith(self.directory + "/"):
            raise ValueError("%s is outside the session's directory" % name)
        return full


class Shell:
    """--shell: one bash for the whole page, its commands typed in one after the other.

    bash reads a pipe one byte at a time, so that the commands it starts (dbus-run-session --
    bash) can read what follows. After each command comes a line that writes its number, $? and
    $PWD to a FIFO and gives $? back ((exit N)); whichever shell reads that line says the command
    is done. stdout and stderr of the shell are one file, the terminal: what a command printed is
    what was added to it meanwhile."""

    def __init__(self, directory, env, tmp):
        fifo = os.path.join(tmp, "done")
        os.mkfifo(fifo)
        # Read and write: a writer never blocks on opening it, and there is never an end of file.
        self.fifo = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        self.done_line = ('__doc_test_status=$?; printf "%s %s %s\\n" {n} "$__doc_test_status" "$PWD" >'
                          + shlex.quote(fifo) + '; (exit "$__doc_test_status")\n')
        terminal = os.path.join(tmp, "terminal")
        with open(terminal, "ab") as out:
            self.proc = subprocess.Popen(["bash"], stdin=subprocess.PIPE, stdout=out, stderr=out, cwd=directory,
                                         env=env, start_new_session=True)
        self.terminal = open(terminal, "rb")
        self.cwd = directory
        self.n = 0
        self.pending = b""

    def run(self, cmd):
        self.n += 1
        try:
            self.proc.stdin.write((cmd + "\n" + self.done_line.format(n=self.n)).encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise CommandLost("the shell has exited", self.terminal.read().decode(errors="replace"))
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while True:
            lines = self.pending.split(b"\n")
            self.pending = lines.pop()
            for done in lines:
                n, status, cwd = done.decode(errors="replace").split(" ", 2)
                if int(n) == self.n:
                    self.cwd = cwd
                    return int(status), self.terminal.read().decode(errors="replace")
            left = deadline - time.monotonic()
            if self.proc.poll() is not None:
                raise CommandLost("the shell exited with status %d" % self.proc.returncode,
                                  self.terminal.read().decode(errors="replace"))
            if left <= 0:
                raise CommandLost("did not finish within %d seconds" % COMMAND_TIMEOUT,
                                  self.terminal.read().decode(errors="replace"))
            if select.select([self.fifo], [], [], min(left, 0.5))[0]:
                self.pending += os.read(self.fifo, 4096)

    def path(self, name):
        if os.path.isabs(name) or ".." in name.split("/"):
            raise ValueError("%s is not a path below the shell's directory" % name)
        return os.path.join(self.cwd, name)

    def running(self):
        """Whether a process of the shell's process group runs (zombies, whose parent has yet to
        reap them, do not)."""
        for pid in os.listdir("/proc"):
            try:
                stat = open("/proc/%s/stat" % pid).read() if pid.isdigit() else ""
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()      # state, ppid, pgrp, ...
            if len(fields) > 2 and int(fields[2]) == self.proc.pid and fields[0] != "Z":
                return True
        return False

    def close(self):
        """Ends the shell (end of input: every shell the page started exits), then what it left
        running: SIGTERM to its process group, SIGKILL to what is left of it after 15 seconds."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass

        def signal_group(sig):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

        signal_group(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.running():
            self.proc.poll()
            time.sleep(0.05)
        signal_group(signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.fifo)
        self.terminal.close()


def run_blocks(doc, blocks, runner, skip=lambda cmd: False):
    """Runs BLOCKS with RUNNER; prints a TAP line per command. 0 if all passed, else 1."""
    failed = n = 0
    name = os.path.basename(doc)
    for block in blocks:
        if len(block) == 4:
            try:
                path = runner.path(block[1])
            except ValueError as e:
                print("FAIL: %s:%d: %s" % (doc, block[0], e))
                return 1
            with open(path, "a" if block[3] else "w") as f:
                f.write(block[2])
            continue
        for line, cmd, expected in block[2]:
            if skip(cmd):
                continue
            n += 1
            try:
                status, output = runner.run(cmd)
            except CommandLost as e:
                print("not ok %d - %s:%d: %s\n--- %s; it printed:\n%s\nBail out! The commands after it cannot run."
                      % (n, name, line, cmd, e.args[0], e.args[1]))
                return 1
            actual = output.rstrip("\n").split("\n") if output else []
            if expected is None:
                if status == 0:
                    print("ok %d - %s:%d: %s" % (n, name, line, cmd.split("\n")[0][:80]))
                else:
                    failed += 1
                    print("not ok %d - %s:%d: %s\n--- exit status %d (the page expects 0); it printed:\n%s"
                          % (n, name, line, cmd, status, "\n".join(actual)))
                continue
            while expected and expected[-1] == "":
                expected = expected[:-1]
            if matches(expected, actual):
                print("ok %d - %s:%d: %s" % (n, name, line, cmd.split("\n")[0][:80]))
            else:
                failed += 1
                print("not ok %d - %s:%d: %s\n--- the page says:\n%s\n--- it printed:\n%s"
                      % (n, name, line, cmd, "\n".join(expected), "\n".join(actual)))
    return 1 if failed else 0


def tested_blocks(doc):
    """The tested blocks of DOC, or None (said why) if it has none or a malformed one."""
    try:
        blocks = sessions(doc)
    except ValueError as e:
        print("FAIL: %s" % e)
        return None
    if not any(len(b) == 3 for b in blocks):
        print("FAIL: %s has no session marked %s" % (doc, MARK))
        return None
    return blocks


def main_shell(directory, doc):
    blocks = tested_blocks(doc)
    if blocks is None:
        return 1
    tmp = tempfile.mkdtemp(prefix="apiary-doc-shell-")
    shell = None
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
        shell = Shell(os.path.abspath(directory), env, tmp)
        return run_blocks(doc, blocks, shell)
    finally:
        if shell:
            shell.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    sys.stdout.reconfigure(line_buffering=True)         # each line as it comes, also when killed
    if len(sys.argv) == 4 and sys.argv[1] == "--shell":
        return main_shell(sys.argv[2], sys.argv[3])
    if len(sys.argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    doc, example = sys.argv[1], sys.argv[2]
    for tool in ("busctl", "dbus-daemon"):
        if not shutil.which(tool):
            print("SKIP: %s is not installed" % tool)
            return 77
    blocks = tested_blocks(doc)
    if blocks is None:
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
        # The pages kill a worker with SIGSEGV and show "killed by SIGSEGV": in a sanitizer build,
        # ASan would catch the signal and turn it into an exit with status 1.
        env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"), "handle_segv=0"]))
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

        # A command "A=…" is the page telling the reader to set A: the checker has.
        return run_blocks(doc, blocks, Commands(tmp, env), skip=lambda cmd: re.match(r"A=", cmd))
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
