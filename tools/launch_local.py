"""Starts the K worker processes of a multi-worker TensorFlow job on this host.

    python tools/launch_local.py --workers K [--cores-per-worker C] \
        [--grace-seconds S] -- <command and its args>
    python tools/launch_local.py --workers 2 --cores-per-worker 1 -- \
        tf-lbsgd --gin_file=... --model_dir=runs/mw

The command after `--` runs unchanged in every worker; worker i gets a
TF_CONFIG naming K free localhost ports and task index i (worker 0 is the
chief). With --cores-per-worker C, worker i is pinned to C cores and told to
use C threads. Worker output is merged onto stdout as "[worker i] ...".

Exit code: 0 when all workers exit 0; 75 (PREEMPTED_EXIT_CODE) when all exit
0 or 75 and at least one was preempted (re-run the command to resume from its
checkpoint); 1 when a worker fails, after the others are sent SIGTERM and,
--grace-seconds later, SIGKILL; 2 for bad arguments. A SIGTERM or SIGINT to
the launcher is forwarded to all workers as SIGTERM (a second one kills them).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

# Must equal tf_lbsgd.preemption.PREEMPTED_EXIT_CODE (EX_TEMPFAIL): the worker
# saved a checkpoint after a SIGTERM and should be re-run.
PREEMPTED_EXIT_CODE = 75
THREAD_ENV_VARS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                   "OMP_NUM_THREADS")
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


def worker_tf_config(ports, index):
    """Returns the TF_CONFIG dict of worker `index` of a cluster on `ports`."""
    return {"cluster": {"worker": [f"localhost:{port}" for port in ports]},
            "task": {"type": "worker", "index": index}}


def core_assignment(index, cores_per_worker, available_cores):
    """Returns the cores of worker `index`: the `cores_per_worker` cores from
    index * cores_per_worker on, in sorted `available_cores`, wrapping around
    (without repeats when there are fewer cores than cores_per_worker)."""
    cores = sorted(available_cores)
    start = index * cores_per_worker
    picked = [cores[(start + j) % len(cores)] for j in range(cores_per_worker)]
    return list(dict.fromkeys(picked))


def worker_env(base_env, ports, index, cores_per_worker=None):
    """Returns a copy of `base_env` with worker `index`'s TF_CONFIG, its
    thread counts when `cores_per_worker` is given, and unbuffered Python
    output (so its lines stream as they are written)."""
    env = dict(base_env)
    env["TF_CONFIG"] = json.dumps(worker_tf_config(ports, index))
    env.setdefault("PYTHONUNBUFFERED", "1")
    if cores_per_worker is not None:
        env.update({var: str(cores_per_worker) for var in THREAD_ENV_VARS})
    return env


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


def _say(message, stream=None):
    """Prints a "launch_local: " line to stdout or `stream`."""
    with _print_lock:
        print(f"launch_local: {message}", file=stream or sys.stdout, flush=True)


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


def _parse_args(argv):
    """Returns the options and the resolved `command`; exits 2 if bad."""
    if "--" in argv:
        split = argv.index("--")
        options, command = argv[:split], argv[split + 1:]
    else:
        options, command = argv, []
    parser = argparse.ArgumentParser(
        prog="launch_local.py", usage="%(prog)s --workers K "
        "[--cores-per-worker C] [--grace-seconds S] -- command [args...]")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--cores-per-worker", "--cores_per_worker", type=int)
    parser.add_argument("--grace-seconds", "--grace_seconds", type=float,
                        default=10.0)
    args = parser.parse_args(options)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.cores_per_worker is not None and args.cores_per_worker < 1:
        parser.error(f"--cores-per-worker must be >= 1, got "
                     f"{args.cores_per_worker}")
    if args.grace_seconds < 0:
        parser.error(f"--grace-seconds must be >= 0, got {args.grace_seconds}")
    try:
        args.command = resolve_command(command)
    except ValueError as e:
        parser.error(str(e))
    return args


def _start_workers(args):
    """Starts the workers; returns their Popen objects and reader threads."""
    ports = free_ports(args.workers)
    procs, readers = [], []
    own_cores = os.sched_getaffinity(0) if args.cores_per_worker else None
    for index in range(args.workers):
        env = worker_env(os.environ, ports, index, args.cores_per_worker)
        if own_cores:  # The child inherits this thread's affinity at fork.
            os.sched_setaffinity(0, core_assignment(
                index, args.cores_per_worker, own_cores))
        try:
            procs.append(subprocess.Popen(
                args.command, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True))
        except OSError:
            for proc in procs:
                _signal_group(proc, signal.SIGKILL)
            raise
        finally:
            if own_cores:
                os.sched_setaffinity(0, own_cores)
        pinned = (f", cores {core_assignment(index, args.cores_per_worker, own_cores)}"
                  if own_cores else "")
        _say(f"started worker {index} (pid {procs[-1].pid}) on "
             f"localhost:{ports[index]}{pinned}")
        readers.append(threading.Thread(
            target=_stream_output, args=(index, procs[-1].stdout), daemon=True))
        readers[-1].start()
    return procs, readers


def main(argv):
    """Runs the workers; returns the launcher's exit code."""
    try:
        args = _parse_args(argv)
    except SystemExit as e:
        return e.code
    signals = []
    handlers = {s: signal.signal(s, lambda num, _: signals.append(num))
                for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        procs, readers = _start_workers(args)
    except OSError as e:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        _say(f"cannot start {args.command[0]}: {e}", sys.stderr)
        return 2
    codes, deadline, failed = {}, None, False
    try:
        while len(codes) < len(procs):
            for index, proc in enumerate(procs):
                if index in codes or proc.poll() is None:
                    continue
                codes[index] = code = proc.returncode
                if code == PREEMPTED_EXIT_CODE:
                    _say(f"worker {index} was preempted (checkpoint saved); "
                         f"re-run the same command to resume")
                elif code != 0 and not failed and deadline is None:
                    failed = True  # The first failure stops the others.
                    _say(f"worker {index} failed ({describe_exit(code)}); "
                         f"stopping the other workers", sys.stderr)
                elif code != 0:
                    _say(f"worker {index} exited ({describe_exit(code)})",
                         sys.stderr)
            running = [(i, p) for i, p in enumerate(procs) if i not in codes]
            if signals and deadline is not None:  # A second signal: kill now.
                deadline = time.monotonic()
            elif (signals or failed) and deadline is None:
                for _, proc in running:
                    _signal_group(proc, signal.SIGTERM)
                deadline = time.monotonic() + args.grace_seconds
            signals.clear()
            if deadline is not None and time.monotonic() >= deadline:
                for index, proc in running:
                    _say(f"sending SIGKILL to worker {index}", sys.stderr)
                    _signal_group(proc, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.05)
    finally:
        for proc in procs:  # Only on errors in this loop are any left.
            if proc.poll() is None:
                _signal_group(proc, signal.SIGKILL)
        for s, handler in handlers.items():
            signal.signal(s, handler)
        for reader in readers:
            reader.join(timeout=2)
    if all(code == 0 for code in codes.values()):
        _say(f"all {len(procs)} workers finished")
        return 0
    if all(code in (0, PREEMPTED_EXIT_CODE) for code in codes.values()):
        return PREEMPTED_EXIT_CODE
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
