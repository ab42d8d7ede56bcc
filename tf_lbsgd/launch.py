"""K local worker processes of a multi-worker job, each with its TF_CONFIG.

`run` starts a command in K processes on this host; worker i gets a
TF_CONFIG naming K free localhost ports and task index i (worker 0 is the
chief) and, with `cores_per_worker` C, is pinned to C cores and told to use
C threads. Their output is merged onto stdout as "[worker i] ...". The first
failure stops the others: SIGTERM, then SIGKILL `grace_seconds` later; a
SIGTERM or SIGINT to this process is forwarded to all workers as SIGTERM (a
second one kills them). The launcher's own lines start with "launch_local:"
(the name of tools/launch_local.py, the command line over this module).

This module imports neither TensorFlow nor absl's flags.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from tf_lbsgd import cluster
from tf_lbsgd import exits

THREAD_ENV_VARS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                   "OMP_NUM_THREADS")
_POLL_SECONDS = 0.05
_print_lock = threading.Lock()


def free_ports(count):
    """Returns `count` distinct free TCP ports of localhost."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("localhost", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def core_assignment(index, cores_per_worker, available_cores):
    """Returns the cores of worker `index`: the `cores_per_worker` cores from
    index * cores_per_worker on, in sorted `available_cores`, wrapping around
    (without repeats when there are fewer cores than cores_per_worker)."""
    cores = sorted(available_cores)
    start = index * cores_per_worker
    picked = [cores[(start + j) % len(cores)] for j in range(cores_per_worker)]
    return list(dict.fromkeys(picked))


class Localhost:
    """Where `run` puts its workers by default: this host, each worker on a
    free localhost port, started as it is."""

    tool = "launch_local"
    # Pinned workers get one inter-op thread per core: on localhost the
    # all-reduce is CPU work on the same cores, and letting it start during
    # backprop (2 threads) measured 3% slower (README, overlap section).
    min_interop_threads = 1

    def addresses(self, workers):
        """The `host:port` of each worker, for TF_CONFIG."""
        return [f"localhost:{port}" for port in free_ports(workers)]

    def wrap(self, index, command):  # pylint: disable=unused-argument
        """The command line that starts worker `index`."""
        return command


def worker_env(base_env, ports, index, cores_per_worker=None, hosts=None,
               min_interop_threads=1):
    """Returns a copy of `base_env` with worker `index`'s TF_CONFIG (a
    cluster of workers on localhost `ports`, or at `hosts`, `host:port`
    strings), its thread counts when `cores_per_worker` is given (as many
    as cores; inter-op threads at least `min_interop_threads`: with one,
    TensorFlow starts no all-reduce pack before the backward pass ends),
    and unbuffered Python output (so its lines stream as they are
    written)."""
    env = dict(base_env)
    if hosts is None:
        hosts = [f"localhost:{port}" for port in ports]
    env["TF_CONFIG"] = json.dumps(cluster.for_hosts(hosts, index))
    env.setdefault("PYTHONUNBUFFERED", "1")
    if cores_per_worker is not None:
        env.update({var: str(cores_per_worker) for var in THREAD_ENV_VARS})
        env["TF_NUM_INTEROP_THREADS"] = str(max(cores_per_worker,
                                                min_interop_threads))
    return env


def check_options(workers, cores_per_worker, grace_seconds):
    """Refuses launcher options out of range (named as the tool's flags).

    Raises:
        ValueError: for workers or cores_per_worker below 1, or a negative
            grace_seconds.
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if cores_per_worker is not None and cores_per_worker < 1:
        raise ValueError(f"--cores-per-worker must be >= 1, got "
                         f"{cores_per_worker}")
    if grace_seconds < 0:
        raise ValueError(f"--grace-seconds must be >= 0, got {grace_seconds}")


def resolve_command(argv):
    """Returns `argv` with argv[0] found on PATH or next to sys.executable.

    Raises:
        ValueError: if `argv` is empty or argv[0] is not found.
    """
    if not argv:
        raise ValueError("no worker command given after --")
    path = (shutil.which(argv[0]) or
            shutil.which(argv[0], path=os.path.dirname(sys.executable)))
    if path is None:
        raise ValueError(f"command {argv[0]!r} not found on PATH or in "
                         f"{os.path.dirname(sys.executable)}")
    return [path] + list(argv[1:])


def describe_exit(returncode):
    """Returns "exit code X" or "killed by SIGNAME" for a returncode."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def say(message, stream=None, tool="launch_local"):
    """Prints a "<tool>: " line to stdout or `stream`."""
    with _print_lock:
        print(f"{tool}: {message}", file=stream or sys.stdout, flush=True)


def _stream_output(index, pipe):
    """Copies the lines of `pipe` to stdout with a "[worker i] " prefix."""
    for raw in iter(pipe.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        with _print_lock:
            sys.stdout.write(f"[worker {index}] {line}\n")
            sys.stdout.flush()
    pipe.close()


def _signal_group(proc, signum):
    """Sends `signum` to the process group of worker `proc`, if any."""
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # Already gone.


def _start_workers(command, workers, cores_per_worker, placement):
    """Starts the workers; returns their Popen objects and reader threads."""
    addresses = placement.addresses(workers)
    procs, readers = [], []
    own_cores = os.sched_getaffinity(0) if cores_per_worker else None
    for index in range(workers):
        env = worker_env(os.environ, None, index, cores_per_worker,
                         hosts=addresses,
                         min_interop_threads=placement.min_interop_threads)
        cores = (core_assignment(index, cores_per_worker, own_cores)
                 if own_cores else None)
        if cores:  # The child inherits this thread's affinity at fork.
            os.sched_setaffinity(0, cores)
        try:
            procs.append(subprocess.Popen(
                placement.wrap(index, command), env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True))
        except OSError:
            for proc in procs:
                _signal_group(proc, signal.SIGKILL)
            raise
        finally:
            if cores:
                os.sched_setaffinity(0, own_cores)
        pinned = f", cores {cores}" if cores else ""
        say(f"started worker {index} (pid {procs[-1].pid}) on "
            f"{addresses[index]}{pinned}", tool=placement.tool)
        readers.append(threading.Thread(
            target=_stream_output, args=(index, procs[-1].stdout), daemon=True))
        readers[-1].start()
    return procs, readers


class _Supervisor:
    """Collects the workers' exit codes and stops them when one fails or
    the launcher is signalled: SIGTERM, then SIGKILL at the deadline."""

    def __init__(self, procs, grace_seconds, tool="launch_local"):
        self.procs = procs
        self.grace_seconds = grace_seconds
        self.tool = tool
        self.codes = {}
        self.deadline = None
        self.failed = False

    def collect_exits(self):
        """Records and reports the workers that exited since the last call."""
        for index, proc in enumerate(self.procs):
            if index in self.codes or proc.poll() is None:
                continue
            self.codes[index] = code = proc.returncode
            if code == exits.PREEMPTED_EXIT_CODE:
                say(f"worker {index} was preempted (checkpoint saved); "
                    f"re-run the same command to resume", tool=self.tool)
            elif code != 0 and not self.failed and self.deadline is None:
                self.failed = True  # The first failure stops the others.
                say(f"worker {index} failed ({describe_exit(code)}); "
                    f"stopping the other workers", sys.stderr, self.tool)
            elif code != 0:
                say(f"worker {index} exited ({describe_exit(code)})",
                    sys.stderr, self.tool)

    def stop_if_due(self, signalled):
        """SIGTERM to the running workers after a failure or a signal, and
        SIGKILL at the deadline (at once after a second signal)."""
        running = [(i, p) for i, p in enumerate(self.procs)
                   if i not in self.codes]
        if signalled and self.deadline is not None:
            self.deadline = time.monotonic()
        elif (signalled or self.failed) and self.deadline is None:
            for _, proc in running:
                _signal_group(proc, signal.SIGTERM)
            self.deadline = time.monotonic() + self.grace_seconds
        if self.deadline is not None and time.monotonic() >= self.deadline:
            for index, proc in running:
                say(f"sending SIGKILL to worker {index}", sys.stderr,
                    self.tool)
                _signal_group(proc, signal.SIGKILL)
            self.deadline = float("inf")

    def exit_code(self):
        """0 if all exited 0, PREEMPTED_EXIT_CODE if all exited 0 or
        preempted, else 1."""
        codes = self.codes.values()
        if all(code == 0 for code in codes):
            say(f"all {len(self.procs)} workers finished", tool=self.tool)
            return 0
        if all(code in (0, exits.PREEMPTED_EXIT_CODE) for code in codes):
            return exits.PREEMPTED_EXIT_CODE
        return 1


def run(command, workers, cores_per_worker=None, grace_seconds=10.0,
        placement=None):
    """Runs `command` in `workers` local worker processes until all exit.

    Call from the main thread: it handles SIGTERM and SIGINT meanwhile.

    Args:
        command: the worker command line (see `resolve_command`).
        workers: K, the number of workers.
        cores_per_worker: cores and threads of each worker; None for no
            pinning.
        grace_seconds: seconds between SIGTERM and SIGKILL.
        placement: where the workers run and how they are reached:
            `Localhost()` (None) or `netns_cluster.Placement` (the hosts of
            an emulated cluster).

    Returns:
        The launcher's exit code: 0 when all workers exit 0;
        PREEMPTED_EXIT_CODE (75) when all exit 0 or 75; 1 when one fails;
        2 when a worker cannot be started.
    """
    placement = placement or Localhost()
    signals = []
    handlers = {s: signal.signal(s, lambda num, _: signals.append(num))
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        procs, readers = _start_workers(command, workers, cores_per_worker,
                                        placement)
    except OSError as e:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        say(f"cannot start {command[0]}: {e}", sys.stderr, placement.tool)
        return 2
    supervisor = _Supervisor(procs, grace_seconds, placement.tool)
    try:
        while len(supervisor.codes) < len(procs):
            supervisor.collect_exits()
            supervisor.stop_if_due(bool(signals))
            signals.clear()
            time.sleep(_POLL_SECONDS)
    finally:
        for proc in procs:  # Only on errors in this loop are any left.
            if proc.poll() is None:
                _signal_group(proc, signal.SIGKILL)
        for s, handler in handlers.items():
            signal.signal(s, handler)
        for reader in readers:
            reader.join(timeout=2)
    return supervisor.exit_code()
