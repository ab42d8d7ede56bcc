"""The emulated cluster (issue 21, item 1): hosts in network namespaces
joined by a bridge, links shaped with tbf, workers started in them by
tools/emulated_cluster.py, and nothing left behind on exit, on failure or
on Ctrl-C. Skipped, with the reason, where namespaces cannot be made."""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tf_lbsgd import netns_cluster

REPO_ROOT = pathlib.Path(os.path.abspath(__file__)).parents[1]
TOOL = str(REPO_ROOT / "tools" / "emulated_cluster.py")

UNAVAILABLE = netns_cluster.unavailable_reason()
needs_namespaces = pytest.mark.skipif(UNAVAILABLE is not None,
                                      reason=str(UNAVAILABLE))

# A TCP receiver and sender run inside the namespaces: the sender's time for
# MEGABYTES at the link's rate.
RECEIVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5555)); s.listen(1); print("ready", flush=True)
c, _ = s.accept()
while c.recv(1 << 20):
    pass
"""
SENDER = """
import socket, sys, time
deadline = time.time() + 10
while True:  # A link just back up: the neighbour entry recovers first.
    try:
        s = socket.create_connection((sys.argv[1], 5555), timeout=10)
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.2)
start = time.time()
for _ in range(int(sys.argv[2])):
    s.sendall(b"x" * (1 << 20))
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
print(time.time() - start)
"""


def _transfer_seconds(cluster, megabytes):
    receiver = subprocess.Popen(cluster.wrap(1, [sys.executable, "-c",
                                                 RECEIVER]),
                                stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline().strip() == "ready"
        sender = subprocess.run(
            cluster.wrap(0, [sys.executable, "-c", SENDER,
                             cluster.address(1), str(megabytes)]),
            capture_output=True, text=True, timeout=60, check=True)
        return float(sender.stdout)
    finally:
        receiver.kill()
        receiver.wait()


def _ours(name):
    return [ns for ns in netns_cluster.namespaces() if ns.startswith(name)]


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="hosts must be 1 to 250, got 0"):
        netns_cluster.EmulatedCluster(0)
    with pytest.raises(ValueError, match="rate_mbit must be > 0 or None, "
                       "got -5"):
        netns_cluster.EmulatedCluster(2, rate_mbit=-5)
    with pytest.raises(ValueError, match="at most 8 letters and digits, got "
                       "'a-b'"):
        netns_cluster.EmulatedCluster(2, name="a-b")


def test_placement_puts_workers_round_robin_on_the_hosts():
    cluster = netns_cluster.EmulatedCluster(2, name="lbplace")
    placement = netns_cluster.Placement(cluster)
    assert placement.addresses(3) == ["10.77.0.1:20000", "10.77.0.2:20000",
                                      "10.77.0.1:20001"]
    assert placement.wrap(2, ["train.sh"]) == [
        "ip", "netns", "exec", "lbplace-h0", "train.sh"]


@needs_namespaces
def test_links_carry_the_shaped_rate_and_nothing_is_left():
    with netns_cluster.EmulatedCluster(2, rate_mbit=100,
                                       name="lbrate") as cluster:
        assert sorted(_ours("lbrate")) == ["lbrate-h0", "lbrate-h1",
                                           "lbrate-sw"]
        assert "tbf" in cluster.qdisc(0) and "rate 100Mbit" in cluster.qdisc(0)
        # 8 MiB at 100 Mbit/s: 0.67 s on the link (TCP's overhead a few %).
        seconds = _transfer_seconds(cluster, 8)
        assert 0.6 < seconds < 1.0, seconds
        cluster.set_rate(400)
        assert 0.6 / 4 < _transfer_seconds(cluster, 8) < 1.0 / 4 + 0.1
    assert _ours("lbrate") == []
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True,
                           text=True, check=True).stdout
    assert "lbrate" not in links


@needs_namespaces
def test_a_down_link_cuts_the_host_off():
    with netns_cluster.EmulatedCluster(2, name="lbdown") as cluster:
        cluster.set_link(1, False)
        with pytest.raises(subprocess.TimeoutExpired):
            _transfer_seconds_with_timeout(cluster)
        cluster.set_link(1, True)
        assert _transfer_seconds(cluster, 1) < 5
    assert _ours("lbdown") == []


def _transfer_seconds_with_timeout(cluster):
    receiver = subprocess.Popen(cluster.wrap(1, [sys.executable, "-c",
                                                 RECEIVER]),
                                stdout=subprocess.PIPE, text=True)
    try:
        receiver.stdout.readline()
        subprocess.run(cluster.wrap(0, [sys.executable, "-c", SENDER,
                                        cluster.address(1), "1"]),
                       capture_output=True, timeout=3, check=False)
    finally:
        receiver.kill()
        receiver.wait()


@needs_namespaces
def test_a_failed_start_removes_what_it_built():
    subprocess.run(["ip", "netns", "add", "lbfail-h1"], check=True)
    try:
        cluster = netns_cluster.EmulatedCluster(2, name="lbfail")
        with pytest.raises(netns_cluster.ClusterError,
                           match="'ip netns add lbfail-h1' failed"):
            cluster.start()
        # Its own namespaces are gone; the one it did not make is kept.
        assert _ours("lbfail") == ["lbfail-h1"]
    finally:
        subprocess.run(["ip", "netns", "del", "lbfail-h1"], check=False)


def _tool(*args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen([sys.executable, TOOL, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)


@needs_namespaces
def test_the_tool_runs_workers_in_the_hosts_and_tears_down():
    probe = ("import json, os, socket; "
             "print(json.loads(os.environ['TF_CONFIG'])['task']['index'], "
             "socket.gethostbyname(socket.gethostname()), "
             "sorted(os.listdir('/sys/class/net')))")
    tool = _tool("--hosts=2", "--rate_mbit=500", "--name=lbtool", "--",
                 sys.executable, "-c", probe)
    out, _ = tool.communicate(timeout=120)
    assert tool.returncode == 0, out
    assert "emulated_cluster: 2 hosts (lbtool-h0..), 500 Mbit/s links" in out
    assert "started worker 1 (pid" in out and "on 10.77.0.2:20000" in out
    # Each worker sees only its namespace's interfaces.
    assert "[worker 0] 0 " in out and "['eth0', 'lo']" in out
    assert "emulated_cluster: all 2 workers finished" in out
    assert _ours("lbtool") == []


@needs_namespaces
def test_a_failing_worker_stops_the_run_and_tears_down():
    tool = _tool("--hosts=2", "--name=lbfails", "--", sys.executable, "-c",
                 "import json, os, sys, time\n"
                 "if json.loads(os.environ['TF_CONFIG'])['task']['index']:\n"
                 "    sys.exit(3)\n"
                 "time.sleep(60)")
    out, _ = tool.communicate(timeout=120)
    assert tool.returncode == 1, out
    assert "worker 1 failed (exit code 3); stopping the other workers" in out
    assert _ours("lbfails") == []


@needs_namespaces
def test_ctrl_c_stops_the_workers_and_tears_down():
    tool = _tool("--hosts=2", "--name=lbint", "--grace_seconds=2", "--",
                 sys.executable, "-c", "import time; time.sleep(120)")
    deadline = time.time() + 60
    while not sorted(_ours("lbint")) == ["lbint-h0", "lbint-h1", "lbint-sw"]:
        assert time.time() < deadline, "the cluster never came up"
        time.sleep(0.2)
    time.sleep(1)
    tool.send_signal(signal.SIGINT)
    out, _ = tool.communicate(timeout=60)
    assert tool.returncode == 1, out  # The workers were stopped, not done.
    assert _ours("lbint") == []


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_without_root_it_says_why(tmp_path):
    """As root, run the tool as nobody (uid 65534): from a world-readable
    copy, as Bazel's runfiles may sit in root's private cache."""
    if os.geteuid() == 0:
        if subprocess.run(NOBODY + [sys.executable, "-c", "import absl"],
                          capture_output=True, check=False).returncode:
            pytest.skip("nobody cannot run this Python (it lives in a "
                        "private directory)")
        # Not under tmp_path: pytest's and Bazel's temporary directories
        # are root's alone.
        copy = pathlib.Path(tempfile.mkdtemp(prefix="tf_lbsgd_nobody_",
                                             dir="/tmp"))
        try:
            shutil.copytree(REPO_ROOT / "tf_lbsgd", copy / "tf_lbsgd",
                            ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy(TOOL, copy / "emulated_cluster.py")
            for path in [copy, *copy.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
            result = subprocess.run(
                NOBODY + [sys.executable, str(copy / "emulated_cluster.py"),
                          "--hosts=2", "--", "true"],
                capture_output=True, text=True, timeout=60, cwd=copy,
                env=dict(os.environ, PYTHONPATH=str(copy)), check=False)
        finally:
            shutil.rmtree(copy)
    else:  # Not root already: the tool's refusal is the same.
        result = subprocess.run(
            [sys.executable, TOOL, "--hosts=2", "--", "true"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
            check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "network namespaces need root" in result.stderr


@needs_namespaces
def test_bench_scaling_launches_its_workers_on_emulated_hosts():
    """tools/bench_scaling.py --rate_mbit: `scaling_bench.launch` starts
    the workers through this tool, pinned, one per host."""
    from tf_lbsgd import scaling_bench  # pylint: disable=import-outside-toplevel
    probe = ("import json, os; print('bench_scaling: at', json.loads("
             "os.environ['TF_CONFIG'])['cluster']['worker'][json.loads("
             "os.environ['TF_CONFIG'])['task']['index']], 'threads', "
             "os.environ['TF_NUM_INTEROP_THREADS'], len(os.sched_getaffinity("
             "0)), flush=True); import time; time.sleep(2); "
             "raise SystemExit(3)")
    with pytest.raises(scaling_bench.RunFailed) as error:
        scaling_bench.launch((sys.executable, TOOL), 2,
                             [sys.executable, "-c", probe],
                             cores_per_worker=1, timeout=120,
                             grace_seconds=1, rate_mbit=250)
    out = str(error.value)  # The failed run's output names the hosts.
    assert "250 Mbit/s links" in out
    # Pinned to one core, with 2 inter-op threads (Placement).
    assert "at 10.77.0.1:20000 threads 2 1" in out
    assert "at 10.77.0.2:20000 threads 2 1" in out
    name = re.search(r"2 hosts \((lb\d+)-h0\.\.\)", out).group(1)
    assert _ours(name + "-") == []
