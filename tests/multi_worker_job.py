"""A tiny multi-worker job through the CLI and what tests check of it
(test_multi_worker on localhost, test_emulated_cluster_training on an
emulated cluster): k = 2 workers x n = 16 of the default job's ResNet-8, the
same arithmetic as one replica with ghost-batch BN."""

import os
import re

import gin
import numpy as np
import tensorflow as tf

from tf_lbsgd import config
from tf_lbsgd import train_lib

TOTAL_STEPS = 75  # 0.04 epochs of 60,000 at kn = 32.
TINY = [  # k = 2 workers x n = 16, ResNet-8 of width 8, 5 steps per loop.
    "experiments/fashion_mnist_default",
    "train_lib.run.per_replica_batch_size = 16",
    "resnet_cifar.width = 8",
    "train_lib.run.epochs = 0.04",
    "train_lib.run.steps_per_loop = 5",
    "train_lib.run.checkpoint_every_steps = 20",
    "train_lib.run.keep_checkpoints = 10",  # ckpt-5 is compared too.
    # Every run below normalises with the same unfused BN ops and no XLA:
    # per-worker BN as one ghost group of n per replica. XLA compiles a
    # batch of 16 and one of 32 with different summation orders: measured
    # 0.058 apart in a momentum slot by step 75. The fused kernel (tested
    # against these ops in test_models.py) sums in an order that depends on
    # its threads (one per worker process here, the pytest process's
    # otherwise): on a Xeon 0.005 apart by step 25.
    "resnet_cifar.bn_group_size = 16",
    "resnet_cifar.bn_fused = False",
    "train_lib.run.jit_compile = False",
]
MULTI_WORKER = "distribute/multi_worker_ring"


def cli_args(model_dir, bindings=()):
    """The tf-lbsgd command line of the job (with more gin `bindings`)."""
    files, bindings = TINY[:1] + [MULTI_WORKER], TINY[1:] + list(bindings)
    return (["tf-lbsgd", f"--model_dir={model_dir}", "--mode=train"]
            + [f"--gin_file={f}" for f in files]
            + [f"--gin_bindings={b}" for b in bindings])


def state(model_dir, step=None):
    """Weights, BN statistics and optimizer slots in a checkpoint (the
    latest one, or that of `step`), by checkpoint key."""
    path = (tf.train.latest_checkpoint(model_dir) if step is None
            else os.path.join(model_dir, f"ckpt-{step}"))
    reader = tf.train.load_checkpoint(path)
    return {key: reader.get_tensor(key)
            for key in reader.get_variable_to_shape_map()
            if key.startswith(("model/", "optimizer/"))}


def latest_step(model_dir):
    return int(re.search(r"ckpt-(\d+)$",
                         tf.train.latest_checkpoint(model_dir)).group(1))


def assert_same_weights(got_dir, want_dir, rtol, atol, step=None):
    got, want = state(got_dir, step), state(want_dir, step)
    assert got.keys() == want.keys() and len(got) > 50
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=atol,
                                   err_msg=key)


def stop_at(proc, pattern):
    """Reads the launcher's output until a line matches; returns the match
    and the output so far (the job keeps running)."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        match = re.search(pattern, line)
        if match:
            return match, "".join(lines)
    raise AssertionError(f"{pattern!r} never printed:\n{''.join(lines)}")


def worker_pids(output):
    return {int(i): int(pid) for i, pid in
            re.findall(r"started worker (\d+) \(pid (\d+)\)", output)}


def train_in_process(model_dir, bindings):
    config.parse(TINY[:1], TINY[1:] + bindings)
    try:
        return train_lib.run(model_dir, mode="train")
    finally:
        gin.clear_config()
