"""Real multi-process clusters on localhost (RING over gRPC), through the CLI.

Two worker processes started by tools/launch_local.py, each one replica of
MultiWorkerMirroredStrategy, must train to the same weights as two replicas of
MirroredStrategy in this process and as one replica with ghost-batch BN; a
SIGTERM to one worker must checkpoint every worker at the same step; a
SIGKILL must stop the job, and the re-run must end where an uninterrupted run
ends (the input position is part of the checkpoint).
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import multi_worker_job as job
from tf_lbsgd.data import sharding

# abspath, not resolve(): under Bazel the test file is a symlink into the
# checkout, and the tools must come from the runfiles next to it.
REPO_ROOT = pathlib.Path(os.path.abspath(__file__)).parents[1]

LAUNCH = [sys.executable, str(REPO_ROOT / "tools" / "launch_local.py")]


def _launch(command, workers=2, **popen):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        LAUNCH + ["--workers", str(workers), "--grace-seconds", "3", "--"]
        + command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=env, **popen)


def _run(command, workers=2, timeout=300):
    proc = _launch(command, workers)
    output, _ = proc.communicate(timeout=timeout)
    return proc.returncode, output


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("mw") / "uninterrupted")
    code, output = _run(job.cli_args(model_dir))
    assert code == 0, output[-4000:]
    return model_dir, output


def test_two_workers_train_like_one_process(uninterrupted, tmp_path):
    model_dir, output = uninterrupted
    assert "launch_local: all 2 workers finished" in output
    assert job.latest_step(model_dir) == job.TOTAL_STEPS
    assert not [d for d in os.listdir(model_dir) if d.startswith(".worker")]
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["num_replicas"] == 2 and metrics["global_batch_size"] == 32
    # Both workers took part in the export; the chief wrote it, once.
    assert os.listdir(os.path.join(model_dir, "export")) == [str(job.TOTAL_STEPS)]
    mirrored = str(tmp_path / "mirrored")
    job.train_in_process(mirrored, ["distribute.build_strategy.num_replicas = 2",
                                 "train_lib.run.export = False"])
    assert not os.path.exists(os.path.join(mirrored, "export"))
    # Measured on an AMD EPYC: 1.2e-7 apart at step 5, 1.8e-7 at 25, then
    # 0.026 at 45 and 0.05 at 75. The in-process replicas now stay
    # bit-identical to each other (tests/test_replica_sync.py), but the two
    # programs (ReductionToOneDevice in one process, RING across processes)
    # still round differently somewhere, and training amplifies it.
    job.assert_same_weights(model_dir, mirrored, rtol=1e-5, atol=1e-6, step=5)
    job.assert_same_weights(model_dir, mirrored, rtol=1e-4, atol=1e-5, step=25)
    ghost = str(tmp_path / "ghost")
    job.train_in_process(ghost, ["distribute.build_strategy.kind = 'default'",
                              "train_lib.run.per_replica_batch_size = 32",
                              "resnet_cifar.bn_group_size = 16"])
    # The same arithmetic up to rounding, which training amplifies: on an
    # AMD EPYC (AVX2) at most 2.4e-7 apart (2 ulp) at every checkpoint up to
    # step 75; on an Intel Xeon (AVX-512; presumably kernels that sum a
    # batch of 16 and one of 32 in other orders) 2.0e-7 at step 5, 1.8e-6 at 25,
    # 0.016 at 45 and 0.097 at 75 (a momentum slot), so the comparison
    # stops at 25, with a tolerance 10x the first one's.
    job.assert_same_weights(model_dir, ghost, rtol=1e-5, atol=1e-6, step=5)
    job.assert_same_weights(model_dir, ghost, rtol=1e-4, atol=1e-5, step=25)


def test_each_example_once_per_epoch_across_worker_processes(tmp_path):
    num_examples, n, steps, seed = 40, 4, 15, 7  # 3 epochs of 5 steps.
    code, output = _run([sys.executable,
                         str(REPO_ROOT / "tests" / "multi_worker_data_probe.py"),
                         str(tmp_path), str(num_examples), str(n), str(steps),
                         str(seed)])
    assert code == 0, output[-4000:]
    seen = []
    for worker in range(2):
        with open(tmp_path / f"worker_{worker}.json") as f:
            record = json.load(f)
        assert record["replicas"] == 2
        seen.append(np.array(record["indices"]))  # [steps, n]
    # Step s: worker 0 holds positions s*8 .. s*8+3, worker 1 the next 4.
    stream = np.concatenate([seen[0], seen[1]], axis=1).reshape(-1)
    for epoch in range(3):
        part = stream[epoch * num_examples:(epoch + 1) * num_examples]
        assert sorted(part) == list(range(num_examples))  # Once each.
        want = sharding.epoch_permutation(num_examples, epoch, seed).numpy()
        np.testing.assert_array_equal(part, want)  # One shared shuffle.
    assert not np.array_equal(stream[:num_examples],
                              stream[num_examples:2 * num_examples])


def test_sigterm_checkpoints_every_worker_then_resumes(uninterrupted,
                                                       tmp_path):
    model_dir = str(tmp_path / "preempted")
    proc = _launch(job.cli_args(model_dir))
    try:
        _, output = job.stop_at(proc, r"\[worker 1\] step (\d+)/")
        os.kill(job.worker_pids(output)[1], signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    output += rest
    assert proc.returncode == 75, output[-4000:]
    for worker in (0, 1):
        assert f"worker {worker} was preempted" in output
    step = job.latest_step(model_dir)
    assert 0 < step < job.TOTAL_STEPS
    assert re.search(rf"preempted at step {step}: checkpoint saved", output)
    assert not [d for d in os.listdir(model_dir) if d.startswith(".worker")]
    with open(os.path.join(model_dir, "metrics.json")) as f:
        assert json.load(f)["global_step"] == step
    code, output = _run(job.cli_args(model_dir))
    assert code == 0, output[-4000:]
    assert job.latest_step(model_dir) == job.TOTAL_STEPS
    job.assert_same_weights(model_dir, uninterrupted[0], rtol=1e-6, atol=1e-7)


def test_sigkill_stops_the_job_and_the_rerun_matches(uninterrupted, tmp_path):
    model_dir = str(tmp_path / "killed")
    proc = _launch(job.cli_args(model_dir))
    try:
        # Worker 0's progress line of step 30: ckpt-25 was saved before
        # that loop began (orbit saves after a loop's actions).
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
    assert 25 <= job.latest_step(model_dir) < job.TOTAL_STEPS
    code, output = _run(job.cli_args(model_dir))
    assert code == 0, output[-4000:]
    assert job.latest_step(model_dir) == job.TOTAL_STEPS
    job.assert_same_weights(model_dir, uninterrupted[0], rtol=1e-6, atol=1e-7)
