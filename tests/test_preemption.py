"""Preemption: SIGTERM -> every worker saves the current step and exits 75."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf

from tf_lbsgd import distribute
from tf_lbsgd import preemption

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def custom_sigterm():
    """Installs a recording SIGTERM handler for the test (so a stray SIGTERM
    never kills pytest) and puts the original one back afterwards."""
    original = signal.getsignal(signal.SIGTERM)
    seen = []

    def handler(signum, frame):
        del frame
        seen.append(signum)

    handler.seen = seen
    signal.signal(signal.SIGTERM, handler)
    yield handler
    signal.signal(signal.SIGTERM, original)


def _wait_for(predicate, seconds=5.0):
    deadline = time.time() + seconds
    while not predicate() and time.time() < deadline:
        time.sleep(0.01)
    return predicate()


def _strategy(kind):
    if kind == "default":
        return tf.distribute.get_strategy()
    return distribute.logical_cpu_strategy(2)


def _step_variable(strategy, value):
    with strategy.scope():
        step = tf.Variable(0, dtype=tf.int64, trainable=False,
                           name="global_step")
    step.assign(value)
    return step


def test_exit_code_is_ex_tempfail():
    assert preemption.PREEMPTED_EXIT_CODE == 75


@pytest.mark.parametrize("kind", ["default", "mirrored_2"])
def test_sigterm_raises_preempted_at_the_current_step(kind, custom_sigterm):
    strategy = _strategy(kind)
    step = _step_variable(strategy, 37)
    watcher = preemption.PreemptionWatcher(strategy, step)
    try:
        assert signal.getsignal(signal.SIGTERM) != custom_sigterm
        assert watcher.received is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert _wait_for(lambda: watcher.received is not None)
        assert watcher.received == "SIGTERM"
        assert custom_sigterm.seen == []  # The watcher's handler took it.
        assert watcher.requested() is True
        step.assign(42)  # The step reported is the one at the check.
        with pytest.raises(preemption.Preempted) as error:
            watcher({"train/loss": 1.0})
        assert error.value.step == 42
        assert isinstance(error.value.step, int)
        assert "preempted at step 42" in str(error.value)
        # The flag stays raised: every later check stops too.
        assert watcher.requested() is True
    finally:
        watcher.close()


@pytest.mark.parametrize("kind", ["default", "mirrored_2"])
def test_without_a_signal_nothing_is_requested(kind, custom_sigterm):
    strategy = _strategy(kind)
    step = _step_variable(strategy, 5)
    watcher = preemption.PreemptionWatcher(strategy, step)
    try:
        assert watcher.requested() is False
        assert watcher({"train/loss": 1.0}) is None
        assert watcher({}) is None
        assert watcher.received is None
    finally:
        watcher.close()


def test_close_restores_the_previous_handler(custom_sigterm):
    strategy = tf.distribute.get_strategy()
    watcher = preemption.PreemptionWatcher(strategy, _step_variable(strategy, 0))
    try:
        installed = signal.getsignal(signal.SIGTERM)
        assert installed != custom_sigterm
    finally:
        watcher.close()
    assert signal.getsignal(signal.SIGTERM) is custom_sigterm
    # A SIGTERM now goes to the previous handler, not to the watcher.
    os.kill(os.getpid(), signal.SIGTERM)
    assert _wait_for(lambda: custom_sigterm.seen == [signal.SIGTERM])
    assert watcher.received is None
    watcher.close()  # A second close is harmless.
    assert signal.getsignal(signal.SIGTERM) is custom_sigterm


def test_watcher_of_other_signals_leaves_sigterm_alone(custom_sigterm):
    previous_usr1 = signal.getsignal(signal.SIGUSR1)
    strategy = tf.distribute.get_strategy()
    watcher = preemption.PreemptionWatcher(
        strategy, _step_variable(strategy, 3), signals=(signal.SIGUSR1,))
    try:
        assert signal.getsignal(signal.SIGTERM) is custom_sigterm
        os.kill(os.getpid(), signal.SIGUSR1)
        assert _wait_for(lambda: watcher.received is not None)
        assert watcher.received == "SIGUSR1"
        with pytest.raises(preemption.Preempted) as error:
            watcher({})
        assert error.value.step == 3
    finally:
        watcher.close()
    assert signal.getsignal(signal.SIGUSR1) == previous_usr1


# --- end to end through the CLI ----------------------------------------

TOTAL_STEPS = 375  # 0.2 epochs of 60,000 at kn = 2 x 16.
BINDINGS = [
    "distribute.build_strategy.num_replicas = 2",
    "train_lib.run.per_replica_batch_size = 16",
    "resnet_cifar.width = 8",
    "train_lib.run.epochs = 0.2",
    "train_lib.run.steps_per_loop = 5",
    "train_lib.run.checkpoint_every_steps = 1000",
]
PROGRESS = re.compile(rf"step (\d+)/{TOTAL_STEPS}\b")


def test_cli_sigterm_saves_the_step_and_exits_75(tmp_path):
    model_dir = str(tmp_path / "model")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    command = [sys.executable, "-m", "tf_lbsgd", f"--model_dir={model_dir}",
               "--mode=train",
               "--gin_file=experiments/fashion_mnist_default"]
    command += [f"--gin_bindings={b}" for b in BINDINGS]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=REPO_ROOT)
    lines, seen_step = [], []

    def reader():  # A thread: a blocked readline must not outlive a timeout.
        for line in proc.stdout:
            lines.append(line)
            match = PROGRESS.search(line)
            if match and not seen_step:
                seen_step.append(int(match.group(1)))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        # ~10 s on an idle 2-core machine; the limits only catch a hang.
        assert _wait_for(lambda: seen_step or proc.poll() is not None, 120), (
            "no progress line within 120 s:\n" + "".join(lines[-40:]))
        assert seen_step, "".join(lines[-40:])
        first = seen_step[0]
        assert 0 < first < TOTAL_STEPS
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        thread.join(timeout=10)
        output = "".join(lines)
        assert code == preemption.PREEMPTED_EXIT_CODE, output[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        thread.join(timeout=10)  # EOF once the process is gone.
    match = re.search(r"preempted at step (\d+): checkpoint saved", output)
    assert match, output[-3000:]
    stopped = int(match.group(1))
    # The flag is checked after each loop of 5 steps, at or after the loop
    # whose progress line was seen, and before the end.
    assert first <= stopped < TOTAL_STEPS
    assert stopped % 5 == 0
    assert tf.train.latest_checkpoint(model_dir) == os.path.join(
        model_dir, f"ckpt-{stopped}")
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["global_step"] == stopped
    assert metrics["num_replicas"] == 2
    assert metrics["global_batch_size"] == 32
    # Training did stop there: no progress line beyond the saved step.
    steps = [int(m.group(1)) for m in PROGRESS.finditer(output)]
    assert steps and max(steps) == stopped
