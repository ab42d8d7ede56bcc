"""tools/launch_local.py over tf_lbsgd.launch: K local workers with
TF_CONFIG, output, failures."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tf_lbsgd import cluster
from tf_lbsgd import exits
from tf_lbsgd import launch

# abspath, not resolve(): under Bazel the tool comes from the runfiles.
SCRIPT = str(pathlib.Path(os.path.abspath(__file__)).parents[1] / "tools" /
             "launch_local.py")
THREAD_VARS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
               "OMP_NUM_THREADS")

# Worker snippets: INDEX is this worker's TF_CONFIG task index, DIR = argv[1].
_PRELUDE = textwrap.dedent("""\
    import json, os, signal, sys, time
    CONFIG = json.loads(os.environ["TF_CONFIG"])
    INDEX = CONFIG["task"]["index"]
    DIR = sys.argv[1] if len(sys.argv) > 1 else None
    def wait_for(path):
        end = time.monotonic() + 20
        while not os.path.exists(path) and time.monotonic() < end:
            time.sleep(0.02)
    """)


def run_launcher(launcher_args, worker_code, *worker_args, timeout=30):
    """Runs the launcher on a `python -c` worker; returns (result, seconds)."""
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, SCRIPT, *launcher_args, "--", sys.executable, "-c",
         _PRELUDE + textwrap.dedent(worker_code), *worker_args],
        capture_output=True, text=True, timeout=timeout, check=False)
    return result, time.monotonic() - start


def worker_lines(stdout, index):
    """Returns the lines of worker `index`, without their prefix."""
    prefix = f"[worker {index}] "
    return [line[len(prefix):] for line in stdout.splitlines()
            if line.startswith(prefix)]


def is_running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_worker_env_has_tf_config_and_threads():
    base = {"PATH": "/bin"}
    env = launch.worker_env(base, [1111, 2222], 1)
    assert json.loads(env["TF_CONFIG"]) == {
        "cluster": {"worker": ["localhost:1111", "localhost:2222"]},
        "task": {"type": "worker", "index": 1}}
    assert cluster.validate_tf_config(env)["task"]["index"] == 1
    assert env["PATH"] == "/bin" and base == {"PATH": "/bin"}
    assert env["PYTHONUNBUFFERED"] == "1"
    assert not any(var in env for var in THREAD_VARS)
    pinned = launch.worker_env(base, [1111, 2222], 0, cores_per_worker=3)
    assert json.loads(pinned["TF_CONFIG"])["task"]["index"] == 0
    assert all(pinned[var] == "3" for var in THREAD_VARS)
    # Hosts joined by links: at least 2 inter-op threads, so each pack's
    # all-reduce can start during backprop; the rest stay one per core.
    linked = launch.worker_env(base, [1111, 2222], 0, cores_per_worker=1,
                               min_interop_threads=2)
    assert linked["TF_NUM_INTEROP_THREADS"] == "2"
    assert linked["TF_NUM_INTRAOP_THREADS"] == linked["OMP_NUM_THREADS"] == (
        "1")
    assert launch.worker_env(base, [1111], 0, cores_per_worker=4,
                             min_interop_threads=2)[
                                 "TF_NUM_INTEROP_THREADS"] == "4"
    assert launch.Localhost.min_interop_threads == 1


def test_core_assignment_wraps_around():
    assert launch.core_assignment(0, 1, {0, 1}) == [0]
    assert launch.core_assignment(1, 1, {1, 0}) == [1]
    assert launch.core_assignment(2, 1, {0, 1}) == [0]
    assert launch.core_assignment(1, 2, {4, 5, 6}) == [6, 4]
    assert launch.core_assignment(0, 3, {0, 1}) == [0, 1]


def test_free_ports_are_distinct_and_bindable():
    import socket
    ports = launch.free_ports(4)
    assert len(set(ports)) == 4
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("localhost", port))


def test_resolve_command(monkeypatch):
    monkeypatch.setenv("PATH", "")  # Only the directory of sys.executable.
    name = os.path.basename(sys.executable)
    assert launch.resolve_command([name, "-c", "pass"]) == [
        os.path.join(os.path.dirname(sys.executable), name), "-c", "pass"]
    with pytest.raises(ValueError, match="'no-such-cmd' not found"):
        launch.resolve_command(["no-such-cmd"])
    with pytest.raises(ValueError, match="no worker command"):
        launch.resolve_command([])


def test_all_workers_succeed():
    result, _ = run_launcher(["--workers", "2"], """\
        print("index", INDEX)
        print("cluster", json.dumps(CONFIG["cluster"]))
        """)
    assert result.returncode == 0, result.stderr
    clusters = []
    for index in range(2):
        lines = worker_lines(result.stdout, index)
        assert f"index {index}" in lines
        clusters += [json.loads(line[len("cluster "):]) for line in lines
                     if line.startswith("cluster ")]
    assert len(clusters) == 2 and clusters[0] == clusters[1]
    workers = clusters[0]["worker"]
    assert len(workers) == 2 and len(set(workers)) == 2
    assert "launch_local: all 2 workers finished" in result.stdout


def test_failed_worker_stops_the_others(tmp_path):
    result, seconds = run_launcher(["--workers", "2"], """\
        if INDEX == 0:
            with open(os.path.join(DIR, "pid.tmp"), "w") as f:
                f.write(str(os.getpid()))
            os.rename(os.path.join(DIR, "pid.tmp"), os.path.join(DIR, "pid"))
            time.sleep(60)
        else:
            wait_for(os.path.join(DIR, "pid"))
            sys.exit(3)
        """, str(tmp_path))
    assert result.returncode != 0
    assert seconds < 20
    assert ("launch_local: worker 1 failed (exit code 3); stopping the other "
            "workers") in result.stderr
    assert not is_running(int((tmp_path / "pid").read_text()))


def test_worker_killed_by_signal():
    result, seconds = run_launcher(["--workers", "2"], """\
        if INDEX == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
        """)
    assert result.returncode != 0
    assert seconds < 20
    assert "worker 1 failed (killed by SIGKILL)" in result.stderr


def test_sigterm_ignoring_worker_is_killed_after_grace(tmp_path):
    result, seconds = run_launcher(["--workers", "2", "--grace_seconds", "1"], """\
        if INDEX == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            open(os.path.join(DIR, "ignoring"), "w").close()
            time.sleep(60)
        else:
            wait_for(os.path.join(DIR, "ignoring"))
            sys.exit(4)
        """, str(tmp_path))
    assert result.returncode != 0
    assert seconds < 20
    assert "worker 1 failed (exit code 4)" in result.stderr
    assert "sending SIGKILL to worker 0" in result.stderr
    assert "worker 0 exited (killed by SIGKILL)" in result.stderr


@pytest.mark.parametrize("codes", [(75, 75), (0, 75)])
def test_preempted_workers(codes):
    result, _ = run_launcher(["--workers", "2"], f"sys.exit({codes}[INDEX])")
    assert result.returncode == exits.PREEMPTED_EXIT_CODE == 75
    for index, code in enumerate(codes):
        message = (f"launch_local: worker {index} was preempted (checkpoint "
                   f"saved); re-run the same command to resume")
        assert (message in result.stdout) == (code == 75)
    assert "all 2 workers finished" not in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_is_forwarded_to_workers(tmp_path, signum):
    code = _PRELUDE + textwrap.dedent("""\
        def preempted(*_):
            print("saving checkpoint", flush=True)
            sys.exit(75)
        signal.signal(signal.SIGTERM, preempted)
        print("ready", flush=True)
        open(os.path.join(DIR, f"ready{INDEX}"), "w").close()
        time.sleep(60)
        """)
    launcher = subprocess.Popen(
        [sys.executable, SCRIPT, "--workers", "2", "--", sys.executable, "-c",
         code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        end = time.monotonic() + 20
        while (not all((tmp_path / f"ready{i}").exists() for i in range(2))
               and time.monotonic() < end):
            time.sleep(0.02)
        launcher.send_signal(signum)
        stdout, stderr = launcher.communicate(timeout=20)
    finally:
        launcher.kill()
    assert launcher.returncode == 75, stderr
    for index in range(2):
        assert worker_lines(stdout, index) == ["ready", "saving checkpoint"]
        assert f"worker {index} was preempted" in stdout


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"),
                    reason="needs os.sched_getaffinity")
def test_cores_per_worker_pins_and_sets_threads():
    result, _ = run_launcher(["--workers", "2", "--cores-per-worker", "1"], """\
        print(json.dumps({"cores": sorted(os.sched_getaffinity(0)),
                          "threads": [os.environ.get(var) for var in (
                              "TF_NUM_INTRAOP_THREADS",
                              "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")]}))
        """)
    assert result.returncode == 0, result.stderr
    available = os.sched_getaffinity(0)
    seen = []
    for index in range(2):
        [line] = worker_lines(result.stdout, index)
        report = json.loads(line)
        assert report["cores"] == launch.core_assignment(index, 1, available)
        assert report["threads"] == ["1", "1", "1"]
        seen.append(report["cores"])
    assert (seen[0] != seen[1]) == (len(available) >= 2)


@pytest.mark.parametrize("options,message", [
    ((0, None, 10), "--workers must be >= 1, got 0"),
    ((1, 0, 10), "--cores-per-worker must be >= 1, got 0"),
    ((1, 1, -1.0), "--grace-seconds must be >= 0, got -1.0"),
])
def test_check_options(options, message):
    launch.check_options(1, None, 0)
    with pytest.raises(ValueError, match=message):
        launch.check_options(*options)


@pytest.mark.parametrize("args,message", [
    (["--workers", "2"], "no worker command given after --"),
    (["--workers", "1", "--cores-per-worker", "0", "--", "python"],
     "--cores-per-worker must be >= 1, got 0"),
    (["--cores_per_worker", "1", "--", "python"], "--workers must have a value"),
    (["--workers", "2", "python"], "unexpected arguments ['python']"),
])
def test_bad_input_exits_2_before_starting_workers(args, message):
    result = subprocess.run([sys.executable, SCRIPT, *args],
                            capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "started worker" not in result.stdout
