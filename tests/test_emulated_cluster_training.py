"""Training on an emulated cluster (issue 21, item 2): 2 hosts x 1 worker,
each in its network namespace behind a 1 Gbit/s link, started by
tools/emulated_cluster.py. They train the tiny job of multi_worker_job to
the weights of one replica with ghost-batch BN, as the localhost workers do;
a SIGKILL of one host's worker stops the run and the re-run ends where an
uninterrupted one does; a host whose link goes down makes the run fail with
one clear line within the collective timeout, not hang. Skipped, with the
reason, where namespaces cannot be made."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

import multi_worker_job as job
from tf_lbsgd import exits
from tf_lbsgd import netns_cluster

REPO_ROOT = pathlib.Path(os.path.abspath(__file__)).parents[1]
TOOL = [sys.executable, str(REPO_ROOT / "tools" / "emulated_cluster.py")]
TIMEOUT_SECONDS = 10  # Of each collective, in the link-down test.

UNAVAILABLE = netns_cluster.unavailable_reason()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None,
                                reason=str(UNAVAILABLE))


def _launch(command, name):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        TOOL + ["--hosts=2", "--rate_mbit=1000", f"--name={name}",
                "--grace_seconds=3", "--"] + command,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _run(command, name, timeout=300):
    proc = _launch(command, name)
    output, _ = proc.communicate(timeout=timeout)
    return proc.returncode, output


def _no_namespaces_left(name):
    return not [ns for ns in netns_cluster.namespaces()
                if ns.startswith(f"{name}-")]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("emulated") / "uninterrupted")
    code, output = _run(job.cli_args(model_dir), "lbtrain")
    assert code == 0, output[-4000:]
    return model_dir, output


def test_two_hosts_train_like_one_replica_with_ghost_bn(uninterrupted,
                                                        tmp_path):
    model_dir, output = uninterrupted
    assert "started worker 1 (pid" in output and "10.77.0.2:20000" in output
    assert "emulated_cluster: all 2 workers finished" in output
    assert _no_namespaces_left("lbtrain")
    assert job.latest_step(model_dir) == job.TOTAL_STEPS
    ghost = str(tmp_path / "ghost")
    job.train_in_process(ghost, [
        "distribute.build_strategy.kind = 'default'",
        "train_lib.run.per_replica_batch_size = 32",
        "resnet_cifar.bn_group_size = 16"])
    # The tolerances of the localhost test (test_multi_worker.py), whose
    # comments give the rounding measured on both kinds of CPU.
    job.assert_same_weights(model_dir, ghost, rtol=1e-5, atol=1e-6, step=5)
    job.assert_same_weights(model_dir, ghost, rtol=1e-4, atol=1e-5, step=25)


def test_sigkill_of_a_hosts_worker_and_the_rerun_matches(uninterrupted,
                                                         tmp_path):
    model_dir = str(tmp_path / "killed")
    proc = _launch(job.cli_args(model_dir), "lbkill")
    try:
        _, output = job.stop_at(proc, r"\[worker 0\] step 30/")
        os.kill(job.worker_pids(output)[1], signal.SIGKILL)
        killed_at = time.monotonic()
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    output += rest
    assert proc.returncode == 1, output[-4000:]
    assert "worker 1 failed (killed by SIGKILL); stopping" in output
    assert time.monotonic() - killed_at < 30
    assert _no_namespaces_left("lbkill")
    assert 25 <= job.latest_step(model_dir) < job.TOTAL_STEPS
    code, output = _run(job.cli_args(model_dir), "lbkill")
    assert code == 0, output[-4000:]
    assert job.latest_step(model_dir) == job.TOTAL_STEPS
    job.assert_same_weights(model_dir, uninterrupted[0], rtol=1e-6,
                            atol=1e-7)


def test_a_host_cut_off_fails_with_a_clear_line_within_the_timeout(tmp_path):
    model_dir = str(tmp_path / "cut")
    command = job.cli_args(model_dir, [
        f"distribute.build_strategy.timeout_seconds = {TIMEOUT_SECONDS}",
        "train_lib.run.epochs = 1"])  # Long enough to be cut mid-run.
    proc = _launch(command, "lbcut")
    try:
        _, output = job.stop_at(proc, r"\[worker 0\] step 30/")
        subprocess.run(["ip", "-n", "lbcut-sw", "link", "set", "lbcutp1",
                        "down"], check=True)
        cut_at = time.monotonic()
        rest, _ = proc.communicate(timeout=180)
        seconds = time.monotonic() - cut_at
    finally:
        proc.kill()
    output += rest
    assert proc.returncode == 1, output[-4000:]
    assert f"exited (exit code {exits.LOST_PEER_EXIT_CODE})" in output or (
        f"failed (exit code {exits.LOST_PEER_EXIT_CODE})" in output)
    assert ("tf-lbsgd: error: the workers lost a peer" in output
            and "re-run the same command on every worker to resume"
            in output), output[-4000:]
    assert "Traceback" not in output
    # The collective's timeout, then the other worker's stop (grace 3 s).
    print(f"failed {seconds:.1f} s after the cut")
    assert seconds < TIMEOUT_SECONDS + 20, seconds
    assert _no_namespaces_left("lbcut")
