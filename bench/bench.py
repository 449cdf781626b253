#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The Apiary benchmarks: run by bench/run, which builds the project and the C helpers first.

    bench.py --top DIR --build DIR --helpers DIR [--quick] [--only SECTIONS]

Every benchmark starts its own private dbus-daemon and apiaryd (as tests/harness.c does), checks
every result it gets, does warm-up runs that are not counted, and reports the median, min and max
over several runs. Everything it starts is stopped again, also on an error or Ctrl-C. Prints one
table at the end; exits 1 if any result could not be verified or any benchmark failed, 0 otherwise.
Timings never make it fail. docs/benchmarks.md explains what each row measures.
"""
import argparse
import os
import platform
import re
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

SECTIONS = ["throughput", "cpu", "crash", "spawn", "idle", "shared"]

# Crash-to-ready latencies quoted in the issue, from other machines (ms).
QUOTED_ANCHORS = [
    ("daemontools", 2.2),
    ("runit", 3.3),
    ("s6", 3.5),
    ("supervisord", 1010.0),
    ("bare fork-and-wait", 0.5),
    ("fork+exec", 1.7),
]
CRASH_TARGET_MEDIAN_MS = 1.0
CRASH_TARGET_P99_MS = 5.0

PRIMES_N = 200000

FULL = dict(
    runs=7, tp_tasks=20000, py_tasks=20000, bare_tasks=200000, run_calls=2000,
    primes_tasks=200, primes_runs=5, kills=100, kill_warmup=5, anchor_iters=1000,
    spawn=[(1, 5), (100, 3), (1000, 3)], idle_window=60.0,
    shared_runs=5, shared_tasks=20000, shared_py_tasks=10000, celery_tasks=2000, shared_run_calls=1000,
    shared_idle_window=30.0,
)
QUICK = dict(
    runs=2, tp_tasks=2000, py_tasks=2000, bare_tasks=20000, run_calls=200,
    primes_tasks=20, primes_runs=1, kills=20, kill_warmup=2, anchor_iters=100,
    spawn=[(1, 1), (100, 1), (1000, 1)], idle_window=2.0,
    shared_runs=1, shared_tasks=2000, shared_py_tasks=1000, celery_tasks=200, shared_run_calls=100,
    shared_idle_window=2.0,
)


class BenchError(Exception):
    """A benchmark could not run, or a result was wrong: the run fails."""


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def parse_kv(line):
    out = {}
    for word in line.split():
        if "=" in word:
            k, v = word.split("=", 1)
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * (len(s) - 1) + 0.5))]


def read_first(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def proc_stat(pid):
    """(utime + stime in seconds, voluntary + nonvoluntary context switches, runtime ns)."""
    stat = read_first("/proc/%d/stat" % pid)
    fields = stat[stat.rfind(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    ctxt = 0
    for line in read_first("/proc/%d/status" % pid).splitlines():
        if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
            ctxt += int(line.split()[1])
    sched = read_first("/proc/%d/schedstat" % pid, "0 0 0").split()
    return cpu, ctxt, int(sched[0])


def children(pid):
    text = read_first("/proc/%d/task/%d/children" % (pid, pid))
    return [int(p) for p in text.split()]


def status_kb(pid, key):
    for line in read_first("/proc/%d/status" % pid).splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def pss_kb(pid):
    for line in read_first("/proc/%d/smaps_rollup" % pid).splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def run_cmd(argv, timeout, check=True):
    """Runs a helper; returns its stdout lines. Raises BenchError if it fails or times out."""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("%s: no result within %ss" % (os.path.basename(argv[0]), timeout))
    if check and p.returncode != 0:
        raise BenchError("%s exited with status %d: %s%s" % (" ".join(argv[:4]), p.returncode,
                                                           p.stderr.strip()[-500:], p.stdout.strip()[-300:]))
    return [line for line in p.stdout.splitlines() if line.strip()]


def verify_tasks(res, what):
    """A run of tasks is right only if every task ended once with the expected result."""
    n = int(res.get("tasks", -1))
    if n <= 0 or int(res.get("ok", -1)) != n or int(res.get("bad", 1)) != 0 or int(res.get("failed", 1)) != 0:
        raise BenchError("%s: results not verified: %s" % (what, res))


class Procs:
    """Every long-running process we start, so that all of them are stopped whatever happens."""

    def __init__(self):
        self.procs = []

    def add(self, p):
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
                except OSError:
                    pass
        self.procs = []


# The keys of the Apiary rows in bench_throughput()'s medians.
APIARY_KEYS = ("batch", "submit", "batch16", "pbatch16", "runbatch", "prunbatch", "runbatch16", "prunbatch16",
               "bbatch", "pbbatch")


class Bus:
    """A private dbus-daemon, like tests/harness.c's, with limits raised for pipelined clients."""

    def __init__(self, bench, name):
        self.dir = tempfile.mkdtemp(prefix="bus-", dir=bench.tmp)
        conf = os.path.join(self.dir, "bus.conf")
        with open(conf, "w") as f:
            f.write("""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=%s/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <!-- The built-in limit is 128 pending replies per connection: too few for pipelined Submit(). -->
  <limit name="max_replies_per_connection">100000</limit>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_connections_per_user">100000</limit>
  <limit name="max_completed_connections">100000</limit>
</busconfig>
""" % self.dir)
        self.log = open(os.path.join(self.dir, "bus.log"), "w")
        self.proc = bench.procs.add(subprocess.Popen(
            ["dbus-daemon", "--nofork", "--nopidfile", "--nosyslog", "--config-file=" + conf, "--print-address=1"],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, start_new_session=True))
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line:
            raise BenchError("dbus-daemon did not print its address")
        self.address = line
        self.pid = self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self.log.close()


class Apiaryd:
    """apiaryd on a Bus, with its NOTIFY_SOCKET, and a thread that reads its log lines as they come."""

    def __init__(self, bench, bus, config, log_level="notice", apiary=""):
        self.bench = bench
        self.bus = bus
        self.dir = tempfile.mkdtemp(prefix="apiaryd-", dir=bench.tmp)
        self.config_path = os.path.join(self.dir, "apiary.conf")
        # The private socket (PrivateSocket=): the same API peer-to-peer, without dbus-daemon.
        self.private_socket = os.path.join(self.dir, "private")
        with open(self.config_path, "w") as f:
            f.write("[Apiary]\nPluginDirectory=%s\nPrivateSocket=%s\n%s\n%s" % (bench.plugins, self.private_socket,
                                                                                apiary, config))
        notify_path = os.path.join(self.dir, "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(notify_path)
        self.notify.settimeout(0.2)
        self.stopped = False
        env = dict(os.environ)
        for k in ("JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"):
            env.pop(k, None)
        env["NOTIFY_SOCKET"] = notify_path
        self.lines = []                 # (monotonic time read, line)
        self.cond = threading.Condition()
        self.logfile = open(os.path.join(self.dir, "apiaryd.log"), "w")
        self.t_start = time.monotonic()
        self.proc = bench.procs.add(subprocess.Popen(
            [bench.apiaryd, "--config=" + self.config_path, "--bus=" + bus.address,
             "--worker-path=" + bench.worker, "--log-level=" + log_level],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
            start_new_session=True))
        self.pid = self.proc.pid
        self.t_ready = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.notify_reader = threading.Thread(target=self._read_notify, daemon=True)
        self.notify_reader.start()

    def _read(self):
        for raw in self.proc.stderr:
            now = time.monotonic()
            line = raw.decode(errors="replace").rstrip("\n")
            self.logfile.write(line + "\n")
            with self.cond:
                self.lines.append((now, line))
                self.cond.notify_all()

    def wait_line(self, pattern, start, timeout):
        """Waits for a log line at index >= START matching PATTERN: (index, time read, match)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.lines)):
                    m = rx.search(self.lines[i][1])
                    if m:
                        return i, self.lines[i][0], m
                start = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise BenchError("apiaryd did not log /%s/ in time%s" % (pattern, self.tail()))
                self.cond.wait(min(left, 0.5))

    def tail(self):
        with self.cond:
            last = [l for _, l in self.lines[-8:]]
        return "; its last lines:\n  " + "\n  ".join(last) if last else ""

    def _read_notify(self):
        # Drained all the time, as systemd does: apiaryd sends STATUS= on every change of state,
        # and blocks in sd_notify() once the socket's queue is full.
        while not self.stopped:
            try:
                msg = self.notify.recv(65536).decode(errors="replace")
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            if not msg:
                continue
            with self.cond:
                if self.t_ready is None and "READY=1" in msg.split("\n"):
                    self.t_ready = now
                self.cond.notify_all()

    def wait_ready(self, timeout=120):
        """Returns the time from the start of apiaryd to READY=1 on the notify socket, in s."""
        deadline = self.t_start + timeout
        with self.cond:
            while self.t_ready is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError("apiaryd did not send READY=1 within %ds%s" % (timeout, self.tail()))
                if self.proc.poll() is not None:
                    raise BenchError("apiaryd exited with status %s before READY=1%s"
                                     % (self.proc.returncode, self.tail()))
                self.cond.wait(min(left, 0.2))
            return self.t_ready - self.t_start

    def workers(self, pool):
        """apiaryd's children but POOL's zygote (Zygote=auto, the default, keeps one)."""
        out = run_cmd(["busctl", "--address=" + self.bus.address, "get-property", "org.apiary.Apiary1",
                       "/org/apiary/Apiary1/pool/" + pool, "org.apiary.Apiary1.Pool", "ZygotePID"], timeout=30)
        zygote = int(out[0].split()[1])
        return [c for c in children(self.pid) if c != zygote]

    def stop(self, timeout=60):
        """SIGTERM, as systemd would; returns the time it took apiaryd to stop, in s."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise BenchError("apiaryd did not stop within %ds of SIGTERM" % timeout)
        elapsed = time.monotonic() - t0
        self.reader.join(10)
        self.stopped = True
        self.notify_reader.join(10)
        self.notify.close()
        self.logfile.close()
        if self.proc.returncode != 0:
            raise BenchError("apiaryd exited with status %d on SIGTERM%s" % (self.proc.returncode, self.tail()))
        return elapsed


class Table:
    """Rows of results, printed at the end as one aligned plain-text table."""

    def __init__(self):
        self.sections = []

    def section(self, title, *notes):
        self.sections.append((title, list(notes), []))

    def row(self, what, workers, unit, values=None, median=None, p99=None, check="ok", n=None):
        if values:
            median = statistics.median(values)
            lo, hi = min(values), max(values)
            n = len(values) if n is None else n
        else:
            lo = hi = None
        self.sections[-1][2].append(dict(what=what, workers=workers, unit=unit, median=median, lo=lo, hi=hi,
                                         p99=p99, check=check, n=n))

    def note(self, text):
        self.sections[-1][1].append(text)

    @staticmethod
    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, str):
            return v
        if isinstance(v, int):
            return "{:,}".format(v)
        a = abs(v)
        if a >= 10000:
            return "{:,.0f}".format(v)
        if a >= 100:
            return "%.0f" % v
        if a >= 10:
            return "%.1f" % v
        if a >= 1:
            return "%.2f" % v
        return "%.3f" % v

    def render(self):
        head = ["benchmark", "workers", "median", "min", "max", "p99", "unit", "n", "check"]
        rows = []
        for _, _, rs in self.sections:
            for r in rs:
                rows.append([r["what"], str(r["workers"]) if r["workers"] is not None else "-",
                             self.fmt(r["median"]), self.fmt(r["lo"]), self.fmt(r["hi"]), self.fmt(r["p99"]),
                             r["unit"], str(r["n"]) if r["n"] is not None else "-", r["check"]])
        widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(len(head))]
        right = {1, 2, 3, 4, 5, 7}

        def line(cells):
            return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                             for i, c in enumerate(cells)).rstrip()

        out = [line(head), line(["-" * w for w in widths])]
        for title, notes, rs in self.sections:
            out.append("")
            out.append(title)
            for n in notes:
                out.append("  " + n)
            for r in rs:
                out.append(line([r["what"], str(r["workers"]) if r["workers"] is not None else "-",
                                 self.fmt(r["median"]), self.fmt(r["lo"]), self.fmt(r["hi"]), self.fmt(r["p99"]),
                                 r["unit"], str(r["n"]) if r["n"] is not None else "-", r["check"]]))
        return "\n".join(out)


class Bench:
    def __init__(self, args):
        self.args = args
        self.p = QUICK if args.quick else FULL
        self.top = os.path.abspath(args.top)
        self.build = os.path.abspath(args.build)
        self.helpers = os.path.abspath(args.helpers)
        self.apiaryd = os.path.join(self.build, "apiaryd")
        self.worker = os.path.join(self.build, "worker", "apiary-worker")
        # apiaryd finds the engine client of shared pools here (the build's, not an installed one).
        os.environ["APIARY_SOURCE_PATH"] = os.path.join(self.build, "source", "apiary-source")
        self.plugins = os.path.join(self.build, "plugins")
        self.python = "/usr/bin/python3"
        self.procs = Procs()
        self.table = Table()
        self.failures = []
        self.checks = 0
        self.tmp = tempfile.mkdtemp(prefix="apiary-bench-")
        self.primes_expected = None

    def helper(self, name):
        return os.path.join(self.helpers, "bench-" + name)

    # ---- the machine ----

    def machine(self):
        def first_line(argv):
            try:
                out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=10)
                return (out.stdout.strip().splitlines() or ["?"])[0]
            except (OSError, subprocess.TimeoutExpired):
                return "?"

        model = "?"
        for line in read_first("/proc/cpuinfo").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        git = first_line(["git", "-C", self.top, "rev-parse", "--short", "HEAD"])
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", self.top, "diff", "--quiet", "HEAD", "--"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        return [
            "date:        %s" % time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "cpu:         %s, %d online CPUs (os.cpu_count %d)" % (model, len(os.sched_getaffinity(0)), os.cpu_count()),
            "kernel:      %s %s" % (platform.system(), platform.release()),
            "memory:      %s" % (read_first("/proc/meminfo").splitlines() or ["?"])[0].split(":", 1)[-1].strip(),
            "apiaryd:     %s (git %s%s), build %s" % (first_line([self.apiaryd, "--version"]), git,
                                                      ", with uncommitted changes" if dirty else "", self.build),
            "dbus-daemon: %s" % first_line(["dbus-daemon", "--version"]),
            "python:      %s %s" % (self.python, first_line([self.python, "--version"])),
            "gcc:         %s" % first_line(["gcc", "--version"]),
            "libsystemd:  %s" % first_line(["pkg-config", "--modversion", "libsystemd"]),
            "fd limit:    %d (hard %d)" % (soft, hard),
            "load avg:    %s at the start (other work on the machine skews the timings)"
            % " ".join(read_first("/proc/loadavg").split()[:3]),
            "mode:        %s" % ("--quick (smoke run: timings are not meaningful)" if self.args.quick else "full"),
        ]

    # ---- 1. throughput ----

    def cpu_snapshot(self, d, bus):
        snap = {"apiaryd": proc_stat(d.pid)[2], "dbus-daemon": proc_stat(bus.pid)[2]}
        snap["workers"] = sum(proc_stat(w)[2] for w in children(d.pid))     # an idle zygote adds nothing
        return snap

    def bench_throughput(self):
        p = self.p
        runs = p["runs"]
        t = self.table
        t.section("1. Throughput: echo plugin, 64-byte payloads, tasks/s (higher is better)",
                  "median/min/max over %d runs after 1 warm-up run; every result compared with its payload" % runs)
        bus = Bus(self, "tp")
        config = ""
        for w in (2, 4):
            config += "[Pool e%d]\nPlugin=echo.so\nWorkers=%d\n\n" % (w, w)
            config += "[Pool e%dc16]\nPlugin=echo.so\nWorkers=%d\nConcurrency=16\n\n" % (w, w)
        d = Apiaryd(self, bus, config)
        d.wait_ready()
        client = self.helper("client")
        cpu_rows = []
        run_rows = {}

        def apiary(label, pool, w, extra, tasks, cpu_label=None, private=False):
            values = []
            cpu = []
            where = (["--private", "--address=unix:path=" + d.private_socket] if private
                     else ["--address=" + bus.address])
            for k in range(1 + runs):
                before = self.cpu_snapshot(d, bus)
                lines = run_cmd([client] + where + ["--pool=" + pool, "--tasks=%d" % tasks] + extra,
                                timeout=300)
                after = self.cpu_snapshot(d, bus)
                res = parse_kv(lines[-1])
                verify_tasks(res, label)
                self.checks += 1
                if k == 0:
                    continue
                values.append(res["rate"])
                per = {name: (after[name] - before[name]) / 1e3 / tasks for name in after}
                per["client"] = res["client_cpu_s"] * 1e6 / tasks
                cpu.append(per)
            t.row(label, w, "tasks/s", values)
            if cpu_label:
                cpu_rows.append((cpu_label, w, cpu))
            return statistics.median(values)

        medians = {}
        for w in (2, 4):
            medians[("batch", w)] = apiary("Apiary SubmitBatch(500) + TaskFinished", "e%d" % w, w,
                                           ["--mode=batch", "--batch=500", "--inflight=2000"], p["tp_tasks"],
                                           "Apiary SubmitBatch(500), Concurrency=1")
            medians[("bbatch", w)] = apiary("Apiary SubmitBatch(500) + TasksFinished", "e%d" % w, w,
                                            ["--mode=batch", "--batch=500", "--inflight=2000", "--batch-results"],
                                            p["tp_tasks"])
            medians[("pbbatch", w)] = apiary("Apiary SubmitBatch(500) + TasksFinished, private socket", "e%d" % w, w,
                                             ["--mode=batch", "--batch=500", "--inflight=2000", "--batch-results"],
                                             p["tp_tasks"], private=True)
            medians[("submit", w)] = apiary("Apiary Submit pipelined (1000 in flight)", "e%d" % w, w,
                                            ["--mode=submit", "--inflight=1000"], p["tp_tasks"])
            medians[("batch16", w)] = apiary("Apiary SubmitBatch(500), Concurrency=16", "e%dc16" % w, w,
                                             ["--mode=batch", "--batch=500", "--inflight=2000"], p["tp_tasks"],
                                             "Apiary SubmitBatch(500), Concurrency=16")
            medians[("pbatch16", w)] = apiary("Apiary SubmitBatch(500), C=16, private socket", "e%dc16" % w, w,
                                              ["--mode=batch", "--batch=500", "--inflight=2000"], p["tp_tasks"],
                                              private=True)
            medians[("runbatch", w)] = apiary("Apiary RunBatch(500), Concurrency=1", "e%d" % w, w,
                                              ["--mode=runbatch", "--batch=500", "--inflight=2000"], p["tp_tasks"])
            medians[("prunbatch", w)] = apiary("Apiary RunBatch(500), C=1, private socket", "e%d" % w, w,
                                               ["--mode=runbatch", "--batch=500", "--inflight=2000"], p["tp_tasks"],
                                               private=True)
            medians[("runbatch16", w)] = apiary("Apiary RunBatch(500), Concurrency=16", "e%dc16" % w, w,
                                                ["--mode=runbatch", "--batch=500", "--inflight=2000"],
                                                p["tp_tasks"] * 4, "Apiary RunBatch(500), Concurrency=16")
            medians[("prunbatch16", w)] = apiary("Apiary RunBatch(500), C=16, private socket", "e%dc16" % w, w,
                                                 ["--mode=runbatch", "--batch=500", "--inflight=2000"],
                                                 p["tp_tasks"] * 4, "Apiary RunBatch(500), C=16, private socket",
                                                 private=True)

        # Run(), one call at a time: the round-trip latency.
        for w, where in ((2, "bus"), (2, "private socket")):
            p50s, p99s = [], []
            addr = (["--private", "--address=unix:path=" + d.private_socket] if where != "bus"
                    else ["--address=" + bus.address])
            for k in range(1 + runs):
                lines = run_cmd([client] + addr + ["--pool=e%d" % w, "--mode=run",
                                                   "--tasks=%d" % p["run_calls"]], timeout=300)
                res = parse_kv(lines[-1])
                verify_tasks(res, "Run")
                self.checks += 1
                if k:
                    p50s.append(res["p50_us"])
                    p99s.append(res["p99_us"])
            run_rows[(w, where)] = (p50s, p99s)

        # The Python client (python/apiary): what a Python program that submits tasks runs,
        # apiary.Pool.map() on a default pool (Kind=cpu, Concurrency=1), through the bus.
        for w in (2, 4):
            lines = run_cmd([self.python, os.path.join(self.top, "bench", "py_apiary.py"), "--address", bus.address,
                             "--pool", "e%d" % w, "--tasks", str(p["py_tasks"]), "--runs", str(runs), "--warmup", "1"],
                            timeout=300)
            values = []
            for line in lines:
                if not line.startswith("tasks="):
                    continue
                res = parse_kv(line)
                verify_tasks(res, "apiary.Pool.map")
                self.checks += 1
                values.append(res["rate"])
            if len(values) != runs:
                raise BenchError("apiary.Pool.map: expected %d runs, got %d" % (runs, len(values)))
            t.row("Python apiary.Pool.map, default pool", w, "tasks/s", values)
            medians[("pyapiary", w)] = statistics.median(values)
        d.stop()
        bus.stop()

        # Python's multiprocessing.Pool, the same work.
        py = os.path.join(self.top, "bench", "py_pool.py")
        for mode, label, extra in [("apply_async", "Python Pool.apply_async + callback", []),
                                   ("map", "Python Pool.map", []),
                                   ("imap_unordered", "Python Pool.imap_unordered(chunksize=1)", ["--chunksize", "1"]),
                                   ("imap_unordered", "Python Pool.imap_unordered(chunksize=100)",
                                    ["--chunksize", "100"])]:
            for w in (2, 4):
                lines = run_cmd([self.python, py, "--workers", str(w), "--tasks", str(p["py_tasks"]), "--mode", mode,
                                 "--runs", str(runs), "--warmup", "1"] + extra, timeout=300)
                values = []
                for line in lines:
                    res = parse_kv(line)
                    verify_tasks(res, label)
                    self.checks += 1
                    values.append(res["rate"])
                if len(values) != runs:
                    raise BenchError("%s: expected %d runs, got %d" % (label, runs, len(values)))
                t.row(label, w, "tasks/s", values)
                medians[(mode + "".join(extra), w)] = statistics.median(values)

        # The floor: a socketpair to forked children, no bus, no supervisor.
        for depth in (1, 16):
            for w in (2, 4):
                values = []
                for k in range(1 + runs):
                    res = parse_kv(run_cmd([self.helper("bare"), str(w), str(p["bare_tasks"]), str(depth), "64"],
                                           timeout=300)[-1])
                    verify_tasks(res, "bare")
                    self.checks += 1
                    if k:
                        values.append(res["rate"])
                t.row("bare socketpair echo, %d in flight per child" % depth, w, "tasks/s", values)
                medians[("bare%d" % depth, w)] = statistics.median(values)

        # The other floor: plain sd-bus method calls peer-to-peer, pipelined (no supervisor).
        for depth in (1, 16):
            for w in (2, 4):
                values = []
                for k in range(1 + runs):
                    res = parse_kv(run_cmd([self.helper("sdbus-p2p"), str(w), str(p["bare_tasks"]), str(depth), "64"],
                                           timeout=300)[-1])
                    verify_tasks(res, "sd-bus p2p")
                    self.checks += 1
                    if k:
                        values.append(res["rate"])
                t.row("bare sd-bus p2p Echo(ay) calls, %d in flight per child" % depth, w, "tasks/s", values)
                medians[("sdbus%d" % depth, w)] = statistics.median(values)

        t.section("1b. Ratios of the medians above (Apiary / other; above 1 means Apiary is faster)",
                  "the issue's aspiration: Apiary within 2x of the bare socketpair floor, i.e. a ratio >= 0.5")
        for w in (2, 4):
            for a, b, label in [
                    ("prunbatch16", "apply_async", "Apiary RunBatch C=16 private / Python apply_async"),
                    ("runbatch16", "apply_async", "Apiary RunBatch C=16 bus / Python apply_async"),
                    ("prunbatch16", "imap_unordered--chunksize1", "Apiary RunBatch C=16 private / Python imap(1)"),
                    ("prunbatch16", "imap_unordered--chunksize100",
                     "Apiary RunBatch C=16 private / Python imap(100)"),
                    ("pbatch16", "apply_async", "Apiary SubmitBatch C=16 private / Python apply_async"),
                    ("prunbatch", "apply_async", "Apiary RunBatch C=1 private / Python apply_async"),
                    ("prunbatch16", "bare16", "Apiary RunBatch C=16 private / bare socketpair (16)"),
                    ("prunbatch16", "sdbus16", "Apiary RunBatch C=16 private / sd-bus p2p (16)"),
                    ("prunbatch", "sdbus1", "Apiary RunBatch C=1 private / sd-bus p2p (1)"),
                    ("batch", "apply_async", "Apiary SubmitBatch / Python apply_async"),
                    ("batch", "imap_unordered--chunksize1", "Apiary SubmitBatch / Python imap_unordered(1)"),
                    ("submit", "apply_async", "Apiary Submit / Python apply_async"),
                    ("batch16", "apply_async", "Apiary SubmitBatch C=16 / Python apply_async"),
                    ("batch", "bare16", "Apiary SubmitBatch / bare socketpair (16 in flight)"),
                    ("batch16", "bare16", "Apiary SubmitBatch C=16 / bare socketpair (16)"),
                    ("batch", "bare1", "Apiary SubmitBatch / bare socketpair (1 in flight)"),
                    ("bbatch", "apply_async", "Apiary SubmitBatch+TasksFinished / Python apply_async"),
                    ("pbbatch", "prunbatch", "Apiary SubmitBatch+TasksFinished private / RunBatch private"),
                    ("pyapiary", "map", "Python apiary.Pool.map / multiprocessing Pool.map")]:
                t.row(label, w, "x", median=medians[(a, w)] / medians[(b, w)], check="")
        # Issue 17: the defaults (Kind=cpu, Concurrency=1) fast.
        for w in (2, 4):
            for a, b, k, label in [
                    ("prunbatch", "apply_async", 10, "default pool: RunBatch private >= 10x apply_async"),
                    ("bbatch", "apply_async", 3, "default pool: SubmitBatch + per-task results (bus) >= 3x apply_async"),
                    ("pbbatch", "prunbatch", 0.7, "default pool: SubmitBatch + TasksFinished private >= 0.7x RunBatch")]:
                t.row("target: " + label, w, "", median="MET" if medians[(a, w)] >= k * medians[(b, w)] else "NOT MET",
                      check="")
        for w in (2, 4):
            best = max(v for (k, ww), v in medians.items() if ww == w and k in APIARY_KEYS)
            t.row("target: best Apiary >= 10x Python apply_async", w, "",
                  median="MET" if best >= 10 * medians[("apply_async", w)] else "NOT MET", check="")
            t.row("target: best Apiary within 2x of sd-bus p2p (16)", w, "",
                  median="MET" if best >= 0.5 * medians[("sdbus16", w)] else "NOT MET", check="")
            t.row("aspiration: best Apiary within 2x of bare (16)", w, "",
                  median="MET" if best >= 0.5 * medians[("bare16", w)] else "NOT MET", check="")

        t.section("1c. Round trip, one task at a time (lower is better); median/min/max over %d runs of %d calls"
                  % (runs, p["run_calls"]))
        for (w, where), (p50s, p99s) in run_rows.items():
            t.row("Apiary Run() round trip (%s), p50" % where, w, "us", p50s)
            t.row("Apiary Run() round trip (%s), p99" % where, w, "us", p99s)
        for w in (2,):
            lines = run_cmd([self.python, py, "--workers", str(w), "--tasks", str(p["run_calls"]), "--mode", "apply",
                             "--runs", str(runs), "--warmup", "1"], timeout=300)
            res = [parse_kv(line) for line in lines]
            for r in res:
                verify_tasks(r, "Python apply")
                self.checks += 1
            t.row("Python Pool.apply() round trip, p50", w, "us", [r["p50_us"] for r in res])
            t.row("Python Pool.apply() round trip, p99", w, "us", [r["p99_us"] for r in res])
        self.echo_run_p50 = statistics.median(run_rows[(2, "bus")][0])

        t.section("1d. CPU time per task, by process, during the SubmitBatch runs (us CPU/task, lower is better)",
                  "from /proc/PID/schedstat (apiaryd, dbus-daemon, workers) and getrusage (client)")
        for label, w, cpu in cpu_rows:
            if w != 2:
                continue
            for name in ("client", "dbus-daemon", "apiaryd", "workers"):
                t.row("%s: %s" % (label, name), w, "us/task", [c[name] for c in cpu], check="")
            t.row("%s: all four" % label, w, "us/task", [sum(c.values()) for c in cpu], check="")

    # ---- 2. CPU-bound scaling and dispatch overhead ----

    def bench_cpu(self):
        p = self.p
        t = self.table
        n_tasks = p["primes_tasks"]
        runs = p["primes_runs"]
        expected = self.primes_below(PRIMES_N)
        t.section("2. CPU-bound: primes plugin, %d tasks of N=%d (primes below N: %d), one SubmitBatch; s (lower is better)"
                  % (n_tasks, PRIMES_N, expected),
                  "median/min/max over %d runs after 1 warm-up run; every count checked against a sieve" % runs)
        values = []
        for k in range(1 + runs):
            res = parse_kv(run_cmd([self.helper("inproc"), os.path.join(self.plugins, "primes.so"), "primes",
                                    str(n_tasks), str(PRIMES_N)], timeout=600)[-1])
            verify_tasks(res, "in-process primes")
            if res.get("expected") != expected:
                raise BenchError("bench-inproc's sieve says %s primes below %d, Python's %d"
                                 % (res.get("expected"), PRIMES_N, expected))
            self.checks += 1
            if k:
                values.append(res["seconds"])
        t.row("in-process: dlopen(primes.so), run() called directly", 1, "s", values)
        inproc = statistics.median(values)

        bus = Bus(self, "cpu")
        d = Apiaryd(self, bus, "[Pool p1]\nPlugin=primes.so\nWorkers=1\n\n[Pool p2]\nPlugin=primes.so\nWorkers=2\n")
        d.wait_ready()
        medians = {}
        for w in (1, 2):
            values = []
            for k in range(1 + runs):
                res = parse_kv(run_cmd([self.helper("client"), "--address=" + bus.address, "--pool=p%d" % w,
                                        "--mode=batch", "--tasks=%d" % n_tasks, "--batch=%d" % n_tasks,
                                        "--inflight=%d" % n_tasks, "--text=%d" % PRIMES_N,
                                        "--expect=%d" % expected, "--timeout=600"], timeout=660)[-1])
                verify_tasks(res, "Apiary primes")
                self.checks += 1
                if k:
                    values.append(res["seconds"])
            t.row("Apiary SubmitBatch(%d), primes pool" % n_tasks, w, "s", values)
            medians[w] = statistics.median(values)
        d.stop()
        bus.stop()
        t.row("speed-up, 1 -> 2 workers (ideal 2.00 on 2 CPUs)", 2, "x", median=medians[1] / medians[2], check="")
        t.row("Apiary 1 worker / in-process", 1, "x", median=medians[1] / inproc, check="")
        t.row("dispatch overhead per primes task (1 worker - in-process)", 1, "us",
              median=(medians[1] - inproc) / n_tasks * 1e6, check="")

        values = []
        for k in range(1 + runs):
            res = parse_kv(run_cmd([self.helper("inproc"), os.path.join(self.plugins, "echo.so"), "echo", "1000000",
                                    "64"], timeout=120)[-1])
            verify_tasks(res, "in-process echo")
            self.checks += 1
            if k:
                values.append(res["ns_per_task"] / 1e3)
        t.row("in-process echo run(), 64 bytes, per call", 1, "us", values)
        if getattr(self, "echo_run_p50", None) is not None:
            t.row("dispatch overhead per echo task (Run p50 - in-process)", 2, "us",
                  median=self.echo_run_p50 - statistics.median(values), check="")

    @staticmethod
    def primes_below(n):
        sieve = bytearray([1]) * n
        sieve[0:2] = b"\0\0"
        for i in range(2, int(n ** 0.5) + 1):
            if sieve[i]:
                sieve[i * i::i] = bytes(len(range(i * i, n, i)))
        return sum(sieve)

    # ---- 3. crash to ready ----

    def bench_crash(self):
        p = self.p
        t = self.table
        kills, warmup = p["kills"], p["kill_warmup"]
        t.section("3. Crash to ready: SIGKILL the worker of a 1-worker echo pool, time until its replacement is ready; ms",
                  "RestartSec=0, RestartMaxSec=0, StartLimitBurst=0: every restart is immediate (no backoff, no start",
                  "limit). %d kills after %d warm-up kills. 'apiaryd log' is apiaryd's own figure: the new worker's"
                  % (kills, warmup),
                  "CLOCK_MONOTONIC at Ready() minus apiaryd's when it handled the exit (--log-level=info, stderr).")
        for zygote in ("no", "auto"):
            self.crash_path(zygote, kills, warmup)

        iters = p["anchor_iters"]
        anchors = [
            ("local: fork() + _exit(0) + waitpid()", ["fork", str(iters)]),
            ("local: fork() + exec(/bin/true) + waitpid()", ["exec", str(iters), "/bin/true"]),
            ("local: posix_spawn(/bin/true) + waitpid()", ["spawn", str(iters), "/bin/true"]),
            ("local: posix_spawn(apiary-worker, no args) + wait", ["spawn-any", str(max(50, iters // 2)),
                                                                    self.worker]),
        ]
        for label, argv in anchors:
            res = parse_kv(run_cmd([self.helper("spawn")] + argv, timeout=300)[-1])
            if int(res.get("bad", 1)) != 0:
                raise BenchError("%s: a child failed" % label)
            self.checks += 1
            t.row(label, "-", "ms", median=res["p50_us"] / 1e3, p99=res["p99_us"] / 1e3, check="ok", n=int(res["runs"]))
            self.table.sections[-1][2][-1].update(lo=res["min_us"] / 1e3, hi=res["max_us"] / 1e3)
        for name, ms in QUOTED_ANCHORS:
            t.row("quoted, other machine: %s" % name, "-", "ms", median=ms, check="", n=None)

    def crash_path(self, zygote, kills, warmup):
        """Kills the worker of a 1-worker pool KILLS times; spawned workers (Zygote=no), or the default
        (Zygote=auto: echo declares APIARY_PLUGIN_FORK_SAFE, so they are forked by a zygote)."""
        t = self.table
        how = "default, Zygote=auto (fork)" if zygote == "auto" else "Zygote=no (exec)"
        p = self.p
        bus = Bus(self, "crash")
        d = Apiaryd(self, bus, "[Pool crash]\nPlugin=echo.so\nWorkers=1\nRestart=always\nRestartSec=0\n"
                               "RestartMaxSec=0\nStartLimitBurst=0\nZygote=%s\n" % zygote,
                    log_level="info")
        d.wait_ready()
        i, _, m = d.wait_line(r"crash/0\[(\d+)\]: Worker ready \(plugin [^)]*\) in ([0-9.]+) ms", 0, 30)
        pid, first_ms = int(m.group(1)), float(m.group(2))
        logged, seen = [], []
        ready_rx = r"crash/0\[(\d+)\]: Worker ready \(plugin [^)]*\), ([0-9.]+) ms after the previous one exited"
        for k in range(warmup + kills):
            time.sleep(0.01)    # let the pool settle (it is "running" again)
            fd = os.pidfd_open(pid)
            t0 = time.monotonic()
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
            try:
                i, t_seen, m = d.wait_line(ready_rx, i + 1, 30)
            except BenchError as e:
                state = read_first("/proc/%d/stat" % pid, "(gone)").rsplit(")", 1)[-1].split()[:1]
                own = read_first("/proc/%d/stat" % d.pid, "(gone)").rsplit(")", 1)[-1].split()[:1]
                raise BenchError("kill %d of worker %d (now in state %s; apiaryd in state %s, wchan %s, "
                                 "syscall %s): %s" % (k + 1, pid, state, own, read_first("/proc/%d/wchan" % d.pid),
                                                      read_first("/proc/%d/syscall" % d.pid).strip(), e))
            new_pid = int(m.group(1))
            if new_pid == pid:
                raise BenchError("the replacement worker has the PID of the one killed")
            pid = new_pid
            if k >= warmup:
                logged.append(float(m.group(2)))
                seen.append((t_seen - t0) * 1e3)
        # Verify: apiaryd counted every kill as a restart, and the pool is running with its new worker.
        out = run_cmd(["busctl", "--address=" + bus.address, "get-property", "org.apiary.Apiary1",
                       "/org/apiary/Apiary1/pool/crash", "org.apiary.Apiary1.Pool", "Restarts", "State"], timeout=30)
        restarts = int(out[0].split()[1])
        if restarts != warmup + kills or out[1].split()[1] != '"running"':
            raise BenchError("after %d kills the pool says Restarts=%s, State=%s" % (warmup + kills, out[0], out[1]))
        self.checks += 1
        d.stop()
        bus.stop()

        met = statistics.median(logged) <= CRASH_TARGET_MEDIAN_MS and percentile(logged, 99) <= CRASH_TARGET_P99_MS
        t.row("Apiary %s, apiaryd log: exit -> new worker Ready()" % how, 1, "ms", logged,
              p99=percentile(logged, 99), check="ok")
        t.row("Apiary %s, kill() -> ready line read by bench" % how, 1, "ms", seen, p99=percentile(seen, 99),
              check="")
        if zygote == "no":
            t.row("Apiary, first start: spawn -> Ready() (apiaryd log)", 1, "ms", median=first_ms, check="", n=1)
        t.row("target (%s): median <= %.0f ms and p99 <= %.0f ms" % (how, CRASH_TARGET_MEDIAN_MS, CRASH_TARGET_P99_MS),
              1, "", median="MET" if met else "NOT MET", check="")


    # ---- 4. spawn ----

    def bench_spawn(self):
        t = self.table
        t.section("4. Spawn: apiaryd start -> READY=1 on NOTIFY_SOCKET, echo plugin; memory once READY=1",
                  "median/min/max over the runs shown; a fresh apiaryd for each run (the first run at 1 worker is a",
                  "warm-up); memory: apiaryd VmRSS, each worker's Pss from /proc/PID/smaps_rollup")
        bus = Bus(self, "spawn")
        plan = [(1, 1, True, "no")] + [(n, runs, False, z) for z in ("no", "auto") for n, runs in self.p["spawn"]]
        for n, runs, warm, zygote in plan:
            times, rss, pss_med, pss_total, stops = [], [], [], [], []  # ms, MiB, KiB, MiB, ms
            how = ", default (Zygote=auto)" if zygote == "auto" else ", Zygote=no"
            for _ in range(runs):
                d = Apiaryd(self, bus, "[Pool s]\nPlugin=echo.so\nWorkers=%d\nStartTimeoutSec=5min\nZygote=%s\n"
                            % (n, zygote))
                times.append(d.wait_ready(timeout=300) * 1e3)
                ws = d.workers("s")
                if len(ws) != n:
                    raise BenchError("READY=1 with %d workers, %d wanted" % (len(ws), n))
                pss = [pss_kb(w) for w in ws]
                rss.append(status_kb(d.pid, "VmRSS") / 1024)
                pss_med.append(statistics.median(pss))
                pss_total.append(sum(pss) / 1024)
                stops.append(d.stop(timeout=120) * 1e3)
                self.checks += 1
            if warm:
                continue
            t.row("time to READY=1" + how, n, "ms", times)
            t.row("apiaryd VmRSS" + how, n, "MiB", rss)
            t.row("worker Pss (median over workers)" + how, n, "KiB", pss_med)
            if n > 1:
                t.row("workers' Pss, total" + how, n, "MiB", pss_total)
            t.row("stop: SIGTERM -> apiaryd exited" + how, n, "ms", stops)
            if n == 1000 and zygote == "auto":
                t.row("target: 1,000 workers ready < 1 s on the default path", n, "",
                      median="MET" if statistics.median(times) < 1000 else "NOT MET", check="")
                t.row("target: a forked worker <= 150 KiB Pss at 1,000 workers", n, "",
                      median="MET" if statistics.median(pss_med) <= 150 else "NOT MET", check="")
        bus.stop()

    # ---- 5. idle ----

    def bench_idle(self):
        t = self.table
        window = self.p["idle_window"]
        t.section("5. Idle: apiaryd with 100 ready workers and nothing to do, over a %.0f s window (expected ~0)" % window,
                  "no WATCHDOG_USEC, so no watchdog pings; CPU from /proc/PID/stat (utime+stime, 10 ms ticks) and",
                  "/proc/PID/schedstat; context switches from /proc/PID/status; epoll_wait calls from perf stat")
        bus = Bus(self, "idle")
        d = Apiaryd(self, bus, "[Pool idle]\nPlugin=echo.so\nWorkers=100\n")
        d.wait_ready()
        time.sleep(1.0)     # let the start-up signals drain
        ws = d.workers("idle")
        perf = None
        events = "syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_epoll_pwait2"
        if os.access("/usr/bin/perf", os.X_OK):
            perf = self.procs.add(subprocess.Popen(
                ["/usr/bin/perf", "stat", "-x,", "-e", events, "-p", str(d.pid), "--timeout", str(int(window * 1000))],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True))
        a0, b0 = proc_stat(d.pid), proc_stat(bus.pid)
        w0 = [proc_stat(w) for w in ws]
        time.sleep(window)
        a1, b1 = proc_stat(d.pid), proc_stat(bus.pid)
        w1 = [proc_stat(w) for w in ws]
        epolls = None
        if perf:
            try:
                _, err = perf.communicate(timeout=30)
                # "<not counted>": the counter never ran because apiaryd was never on a CPU.
                counts = [line.split(",")[0].replace("<not counted>", "0")
                          for line in err.splitlines() if "syscalls:" in line]
                if counts and all(c.strip().isdigit() for c in counts):
                    epolls = sum(int(c) for c in counts)
                else:
                    log("perf stat gave no counts: %s" % err.strip()[-300:])
            except subprocess.TimeoutExpired:
                perf.kill()
        if len(d.workers("idle")) != 100:
            raise BenchError("a worker went away while idle")
        self.checks += 1
        d.stop()
        bus.stop()
        t.row("apiaryd CPU time (utime+stime)", 100, "ms", median=(a1[0] - a0[0]) * 1e3, check="", n=1)
        t.row("apiaryd CPU time (schedstat)", 100, "ms", median=(a1[2] - a0[2]) / 1e6, check="", n=1)
        t.row("apiaryd context switches", 100, "count", median=a1[1] - a0[1], check="", n=1)
        t.row("apiaryd epoll_wait calls (perf stat)", 100, "count", median=epolls if epolls is not None else "n/a",
              check="", n=1)
        t.row("100 workers: context switches, total", 100, "count",
              median=sum(b[1] - a[1] for a, b in zip(w0, w1)), check="", n=1)
        t.row("100 workers: CPU time, total (schedstat)", 100, "ms",
              median=sum(b[2] - a[2] for a, b in zip(w0, w1)) / 1e6, check="", n=1)
        t.row("dbus-daemon context switches", "-", "count", median=b1[1] - b0[1], check="", n=1)

    # ---- 6. shared pools ----

    def nats_start(self, n_nodes):
        """N nats-server nodes with JetStream on 127.0.0.1, ports of their own; returns (procs, servers)."""
        def free_port():
            with socket.socket() as so:
                so.bind(("127.0.0.1", 0))
                return so.getsockname()[1]

        base = tempfile.mkdtemp(prefix="nats-", dir=self.tmp)
        ports = [(free_port(), free_port()) for _ in range(n_nodes)]
        procs = []
        for i, (port, cport) in enumerate(ports):
            conf = os.path.join(base, "n%d.conf" % i)
            with open(conf, "w") as f:
                f.write('server_name: n%d\nlisten: 127.0.0.1:%d\njetstream { store_dir: "%s/n%d" }\n'
                        % (i, port, base, i))
                if n_nodes > 1:
                    routes = "\n".join("    nats-route://127.0.0.1:%d" % c for j, (_, c) in enumerate(ports) if j != i)
                    f.write("cluster {\n  name: bench\n  listen: 127.0.0.1:%d\n  routes: [\n%s\n  ]\n}\n"
                            % (cport, routes))
            procs.append(self.procs.add(subprocess.Popen(
                ["/usr/sbin/nats-server", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL, start_new_session=True)))
        servers = ",".join("nats://127.0.0.1:%d" % p for p, _ in ports)
        # Ready once a JetStream stream can be made on it (a meta leader, in a cluster).
        deadline = time.monotonic() + 30
        while True:
            rc = subprocess.run([self.helper("js-pair"), servers, "1", "1", str(n_nodes)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL).returncode
            if rc == 0:
                break
            if time.monotonic() > deadline:
                raise BenchError("nats-server (%d nodes) did not come up" % n_nodes)
            time.sleep(0.2)
        return procs, servers

    def nats_stop(self, procs):
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(15)

    def wait_source_ready(self, bus, pool="echo", timeout=30):
        path = "/org/apiary/Apiary1/pool/" + pool
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(["busctl", "--address=" + bus.address, "get-property", "org.apiary.Apiary1", path,
                                  "org.apiary.Apiary1.Pool", "SourceState"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True).stdout.strip()
            if out == 's "ready"':
                return
            if time.monotonic() > deadline:
                raise BenchError("pool %s's source is not ready: %s" % (pool, out))
            time.sleep(0.1)

    def pool_u64(self, bus, pool, prop):
        out = subprocess.run(["busctl", "--address=" + bus.address, "get-property", "org.apiary.Apiary1",
                              "/org/apiary/Apiary1/pool/" + pool, "org.apiary.Apiary1.Pool", prop],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout.split()
        return int(out[1]) if len(out) == 2 else -1

    def bench_shared(self):
        p = self.p
        t = self.table
        runs = p["shared_runs"]
        if not os.access("/usr/sbin/nats-server", os.X_OK):
            raise BenchError("nats-server is not installed: run ./tools/deps")
        t.section("6. Shared pools (docs/shared-pools.md): echo, 64-byte payloads, tasks/s (higher is better)",
                  "2 Apiary hosts (each a dbus-daemon and an apiaryd) x 2 workers, Concurrency=16, RunBatch(500)",
                  "on host a; NATS JetStream on 127.0.0.1 (R1: one node, R3: three); %d interleaved rounds" % runs,
                  "after 1 warm-up; every result compared with its payload")
        client = self.helper("client")
        medians = {}

        def rate(argv, label, timeout=600):
            lines = run_cmd(argv, timeout=timeout)
            res = parse_kv(lines[-1])
            verify_tasks(res, label)
            self.checks += 1
            return res

        for replicas in (1, 3):
            engine, servers = self.nats_start(replicas)
            shared = ("[Pool echo]\nPlugin=echo.so\nWorkers=2\nConcurrency=16\nSource=%s\nSourceReplicas=%d\n"
                      "SourceLeaseSec=2s\n\n" % (servers, replicas))
            shared += ("[Pool slow]\nPlugin=sleep.so\nKind=io\nWorkers=1\nConcurrency=1\nSource=%s\n"
                       "SourceReplicas=%d\nSourceLeaseSec=2s\n\n" % (servers, replicas))
            local = "[Pool local]\nPlugin=echo.so\nWorkers=2\nConcurrency=16\n\n"
            hosts = []
            for name in ("a", "b"):
                bus = Bus(self, "shared-" + name)
                d = Apiaryd(self, bus, shared + (local if name == "a" else ""), apiary="HostId=%s\n" % name)
                d.wait_ready()
                self.wait_source_ready(bus)
                self.wait_source_ready(bus, "slow")
                hosts.append((bus, d))
            (bus_a, d_a), (bus_b, d_b) = hosts
            # The same local pool on an apiaryd of its own, without a shared pool beside it.
            bus_l = Bus(self, "local-only")
            d_l = Apiaryd(self, bus_l, local)
            d_l.wait_ready()

            rows = {k: [] for k in ("apiary", "js", "manager", "celery", "local", "local_alone")}
            batch = ["--mode=runbatch", "--batch=500", "--inflight=2000"]
            for k in range(1 + runs):
                r = rate([client, "--address=" + bus_a.address, "--pool=echo", "--tasks=%d" % p["shared_tasks"]]
                         + batch, "Apiary shared")
                if k:
                    rows["apiary"].append(r["rate"])
                r = rate([self.helper("js-pair"), servers, "4", str(p["shared_tasks"]), str(replicas)], "js-pair")
                if k:
                    rows["js"].append(r["rate"])
                if replicas == 1:
                    r = rate([client, "--address=" + bus_a.address, "--pool=local", "--tasks=%d" % p["shared_tasks"]]
                             + batch, "local pool beside")
                    if k:
                        rows["local"].append(r["rate"])
                    r = rate([client, "--address=" + bus_l.address, "--pool=local", "--tasks=%d" % p["shared_tasks"]]
                             + batch, "local pool alone")
                    if k:
                        rows["local_alone"].append(r["rate"])
                    manager = [self.python, os.path.join(self.top, "bench", "py_manager.py"), "--workers", "2",
                               "--tasks", str(p["shared_py_tasks"]), "--runs", "1"]
                    try:
                        lines = run_cmd(manager, timeout=600)
                    except BenchError as e:
                        # The baseline's own processes have been seen killed mid-run (py_manager
                        # says so now, instead of hanging): once more, and say it.
                        print("bench: BaseManager run failed, once more: %s" % e, file=sys.stderr, flush=True)
                        lines = run_cmd(manager, timeout=600)
                    r = parse_kv(lines[-1])
                    verify_tasks(r, "BaseManager")
                    self.checks += 1
                    if k:
                        rows["manager"].append(r["rate"])
                    if self.celery_ok():
                        lines = run_cmd([self.python, os.path.join(self.top, "bench", "py_celery.py"), "--workers",
                                         "2", "--tasks", str(p["celery_tasks"]), "--runs", "1"], timeout=600)
                        r = parse_kv(lines[-1])
                        verify_tasks(r, "Celery")
                        self.checks += 1
                        if k:
                            rows["celery"].append(r["rate"])

            tag = "R%d" % replicas
            t.row("Apiary shared pool, %s, RunBatch(500)" % tag, "2x2", "tasks/s", rows["apiary"])
            t.row("bare libnats JetStream pair, %s (4 workers, batches of 64)" % tag, 4, "tasks/s", rows["js"])
            medians[("apiary", replicas)] = statistics.median(rows["apiary"])
            medians[("js", replicas)] = statistics.median(rows["js"])
            if replicas == 1:
                t.row("Python BaseManager task/result queues over TCP", 2, "tasks/s", rows["manager"])
                medians["manager"] = statistics.median(rows["manager"])
                if rows["celery"]:
                    t.row("Celery 5.2 + Redis 7 (acks_late), prefork", 2, "tasks/s", rows["celery"])
                    medians["celery"] = statistics.median(rows["celery"])
                else:
                    t.row("Celery 5.2 + Redis 7 (acks_late): python3-celery or redis-server missing", 2, "", median="n/a",
                          check="")
                t.row("Apiary local pool, beside the idle shared pool", 2, "tasks/s", rows["local"])
                t.row("Apiary local pool, apiaryd without a shared pool", 2, "tasks/s", rows["local_alone"])
                medians["local"] = statistics.median(rows["local"])
                medians["local_alone"] = statistics.median(rows["local_alone"])

                # Run(), one at a time: the round trip through the engine.
                p50s = []
                for k in range(1 + runs):
                    r = rate([client, "--address=" + bus_a.address, "--pool=echo", "--mode=run",
                              "--tasks=%d" % p["shared_run_calls"]], "Run")
                    if k:
                        p50s.append(r["p50_us"])
                medians["run_p50"] = statistics.median(p50s)
                t.row("Apiary shared pool Run() round trip, R1, p50", "2x2", "us", p50s)

                # Idle: a shared pool with nothing to do.
                window = p["shared_idle_window"]
                time.sleep(1.5)
                helper = [c for c in children(d_a.pid) if read_first("/proc/%d/comm" % c).startswith("apiary-source")]
                a0, h0 = proc_stat(d_a.pid), [proc_stat(c) for c in helper]
                time.sleep(window)
                a1, h1 = proc_stat(d_a.pid), [proc_stat(c) for c in helper]
                t.row("idle shared pool, %.0f s: apiaryd context switches" % window, "2x2", "count",
                      median=a1[1] - a0[1], check="", n=1)
                t.row("idle shared pool, %.0f s: apiary-source context switches" % window, "2x2", "count",
                      median=sum(b[1] - a[1] for a, b in zip(h0, h1)), check="", n=1)
                medians["idle_apiaryd"] = a1[1] - a0[1]

                # Redelivery: host b dies holding a task; when does host a run it?
                medians["redelivery"] = self.shared_redelivery(bus_a, d_a, bus_b, d_b, client)
                t.row("redelivery: host b SIGKILLed holding a task -> host a pulls it (lease 2 s)", "1x2", "ms",
                      median=medians["redelivery"], check="", n=1)
            for d, bus in ((d_l, bus_l), (d_b, bus_b), (d_a, bus_a)):
                if d.proc.poll() is None:
                    d.stop()
                bus.stop()
            self.nats_stop(engine)

        t.section("6b. Shared pools: ratios of the medians above, and the issue's targets")
        t.row("Apiary R1 / Python BaseManager", "", "x", median=medians[("apiary", 1)] / medians["manager"], check="")
        if "celery" in medians:
            t.row("Apiary R1 / Celery + Redis", "", "x", median=medians[("apiary", 1)] / medians["celery"], check="")
        t.row("Apiary R1 / bare JetStream pair R1", "", "x", median=medians[("apiary", 1)] / medians[("js", 1)],
              check="")
        t.row("Apiary R3 / bare JetStream pair R3", "", "x", median=medians[("apiary", 3)] / medians[("js", 3)],
              check="")
        t.row("local pool beside a shared one / alone", "", "x", median=medians["local"] / medians["local_alone"],
              check="")

        def target(label, met):
            t.row("target: " + label, "", "", median="MET" if met else "NOT MET", check="")
        target("R1 >= 4x BaseManager", medians[("apiary", 1)] >= 4 * medians["manager"])
        if "celery" in medians:
            target("R1 >= 30x Celery", medians[("apiary", 1)] >= 30 * medians["celery"])
        target("R1 >= 0.4x the bare JetStream pair", medians[("apiary", 1)] >= 0.4 * medians[("js", 1)])
        target("R3 >= 5,000 tasks/s", medians[("apiary", 3)] >= 5000)
        target("Run() p50 <= 1.5 ms (R1)", medians["run_p50"] <= 1500)
        target("redelivery after a host dies <= lease + 1 s", medians["redelivery"] <= 3000)
        target("local pool beside a shared one >= 0.95x", medians["local"] >= 0.95 * medians["local_alone"])
        target("idle shared pool: no apiaryd wakeups", medians["idle_apiaryd"] == 0)

    def celery_ok(self):
        return (os.access("/usr/bin/redis-server", os.X_OK) and
                subprocess.run([self.python, "-c", "import celery, redis"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL).returncode == 0)

    def shared_redelivery(self, bus_a, d_a, bus_b, d_b, client):
        """Two 1 s sleeps on the pool "slow" (one worker, one place per host): each host pulls
        one. Host b is SIGKILLed at once: the time, in ms, from the kill until host a pulls b's task
        (a's SourcePulled reaching 2, read every 5 ms). The lease is 2 s."""
        proc = subprocess.Popen([client, "--address=" + bus_a.address, "--pool=slow", "--mode=batch", "--tasks=2",
                                 "--batch=2", "--inflight=2", "--text=1000", "--expect=1000", "--timeout=60"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while self.pool_u64(bus_b, "slow", "SourceHeld") <= 0:
            if time.monotonic() > deadline:
                proc.kill()
                raise BenchError("host b never held a task")
            time.sleep(0.005)
        d_b.proc.kill()
        t_kill = time.monotonic()
        d_b.proc.wait(10)
        deadline = t_kill + 30
        while self.pool_u64(bus_a, "slow", "SourcePulled") < 2:
            if time.monotonic() > deadline:
                proc.kill()
                raise BenchError("host b's task did not come back within 30 s")
            time.sleep(0.005)
        elapsed = (time.monotonic() - t_kill) * 1000
        out, _ = proc.communicate(timeout=60)
        res = parse_kv(out.strip().splitlines()[-1])
        verify_tasks(res, "a task redelivered after its host died")
        self.checks += 1
        return elapsed

    # ---- all ----

    def run(self):
        only = self.args.only.split(",") if self.args.only else SECTIONS
        header = self.machine()
        start = time.monotonic()
        for name in SECTIONS:
            if name not in only:
                continue
            log("running %s ..." % name)
            t0 = time.monotonic()
            try:
                getattr(self, "bench_" + name)()
            except BenchError as e:
                self.failures.append("%s: %s" % (name, e))
                log("FAILED: %s: %s" % (name, e))
                self.table.section("%s: FAILED, see above" % name)
                self.procs.stop_all()
            log("%s took %.1f s" % (name, time.monotonic() - t0))
        print()
        print("Apiary benchmarks (bench/run%s)" % (" --quick" if self.args.quick else ""))
        for line in header:
            print("  " + line)
        print()
        print(self.table.render())
        print()
        print("total time: %.0f s; load average at the end: %s"
              % (time.monotonic() - start, " ".join(read_first("/proc/loadavg").split()[:3])))
        if self.failures:
            print("RESULT: FAILED (%d): %s" % (len(self.failures), "; ".join(self.failures)))
            return 1
        print("RESULT: all %d result checks passed (every task's result verified)" % self.checks)
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--helpers", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help="comma-separated: " + ",".join(SECTIONS))
    args = ap.parse_args()
    if args.only and not set(args.only.split(",")) <= set(SECTIONS):
        ap.error("--only takes a comma-separated subset of " + ",".join(SECTIONS))

    # apiaryd needs ~3 fds per worker (socketpair end, pidfd, and its bus) and 1,000 workers are
    # asked for: raise the soft limit as far as the hard one allows (and that as far as we may).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (65536, max(hard, 65536)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))

    # SIGTERM (and SIGHUP) stop the run like Ctrl-C does, so that everything started is stopped.
    def on_signal(signo, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    bench = Bench(args)
    try:
        return bench.run()
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        bench.procs.stop_all()
        subprocess.run(["rm", "-rf", bench.tmp])


if __name__ == "__main__":
    sys.exit(main())
