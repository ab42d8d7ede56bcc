"""Stopping cleanly: SIGTERM (exit 75) and Ctrl-C (exit 130) save the step
reached at the next safe point (after a training loop, or between evaluation
batches, abandoning the evaluation), say so in one line and exit at once; a
second Ctrl-C quits without saving; the re-run resumes."""

import contextlib
import glob
import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import tensorflow as tf

from tf_lbsgd import distribute
from tf_lbsgd import exits
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


@contextlib.contextmanager
def _watching(kind="default", step=0, **kwargs):
    """A PreemptionWatcher of a `kind` strategy at `step`, closed after."""
    strategy = _strategy(kind)
    watcher = preemption.PreemptionWatcher(
        strategy, _step_variable(strategy, step), **kwargs)
    try:
        yield watcher
    finally:
        watcher.close()


def _fields(error):
    return (error.step, error.verb, error.exit_code, error.eval_pending)


def test_exit_codes():
    assert preemption.PREEMPTED_EXIT_CODE == exits.PREEMPTED_EXIT_CODE == 75
    assert preemption.INTERRUPTED_EXIT_CODE == 130  # 128 + SIGINT.
    assert exits.exit_code("SIGTERM") == 75
    assert exits.exit_code("SIGINT") == 130


@pytest.mark.parametrize("kind", ["default", "mirrored_2"])
def test_sigterm_raises_preempted_at_the_current_step(kind, custom_sigterm):
    with _watching(kind, step=37) as watcher:
        assert signal.getsignal(signal.SIGTERM) != custom_sigterm
        assert watcher.received is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert _wait_for(lambda: watcher.received is not None)
        assert watcher.received == "SIGTERM"
        assert custom_sigterm.seen == []  # The watcher's handler took it.
        assert watcher.requested() is True
        watcher.global_step.assign(42)  # The step at the check is reported.
        with pytest.raises(preemption.Preempted) as error:
            watcher({"loss": 1.0})
        assert _fields(error.value) == (42, "preempted", 75, False)
        assert isinstance(error.value.step, int)
        assert "preempted at step 42" in str(error.value)
        # The flag stays raised: every later check stops too.
        assert watcher.requested() is True


@pytest.mark.parametrize("kind", ["default", "mirrored_2"])
def test_without_a_signal_nothing_is_requested(kind, custom_sigterm):
    with _watching(kind, step=5) as watcher:
        assert watcher.requested() is False
        assert watcher({"loss": 1.0}) is None
        assert watcher({}) is None
        for _ in range(3):  # In one process: no collective, nothing raised.
            assert watcher.check_between_eval_batches() is None
        assert watcher.received is None


def test_close_restores_the_previous_handler(custom_sigterm):
    # Python's default_int_handler, or SIG_IGN when the suite runs as a
    # background job of a non-interactive shell.
    sigint = signal.getsignal(signal.SIGINT)
    with _watching() as watcher:
        assert signal.getsignal(signal.SIGTERM) != custom_sigterm
    assert signal.getsignal(signal.SIGTERM) is custom_sigterm
    assert signal.getsignal(signal.SIGINT) is sigint
    assert signal.set_wakeup_fd(-1) == -1  # The watcher's fd is gone too.
    assert not watcher._thread.is_alive()  # pylint: disable=protected-access
    # A SIGTERM now goes to the previous handler, not to the watcher.
    os.kill(os.getpid(), signal.SIGTERM)
    assert _wait_for(lambda: custom_sigterm.seen == [signal.SIGTERM])
    assert watcher.received is None
    watcher.close()  # A second close is harmless.
    assert signal.getsignal(signal.SIGTERM) is custom_sigterm


def test_watcher_of_other_signals_leaves_sigterm_alone(custom_sigterm):
    previous_usr1 = signal.getsignal(signal.SIGUSR1)
    with _watching(step=3, signals=(signal.SIGUSR1,)) as watcher:
        assert signal.getsignal(signal.SIGTERM) is custom_sigterm
        os.kill(os.getpid(), signal.SIGUSR1)
        assert _wait_for(lambda: watcher.received is not None)
        assert watcher.received == "SIGUSR1"
        with pytest.raises(preemption.Preempted) as error:
            watcher({})
        assert error.value.step == 3
    assert signal.getsignal(signal.SIGUSR1) == previous_usr1


def test_ctrl_c_is_acknowledged_and_stops_with_130(custom_sigterm):
    stream = io.StringIO()
    with _watching(step=12, stream=stream) as watcher:
        os.kill(os.getpid(), signal.SIGINT)  # No KeyboardInterrupt in pytest.
        assert _wait_for(lambda: "Ctrl-C again" in stream.getvalue())
        assert watcher.received == "SIGINT"
        assert stream.getvalue() == (
            "tf-lbsgd: interrupted: stopping at the next safe point to save a "
            "checkpoint (press Ctrl-C again to quit at once without saving)\n")
        with pytest.raises(preemption.Preempted) as error:
            watcher({})
        assert _fields(error.value) == (12, "interrupted", 130, False)
        # A SIGTERM after it changes nothing (it is no second Ctrl-C).
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        assert watcher.received == "SIGINT"
        assert custom_sigterm.seen == []


@pytest.mark.parametrize("kind", ["default", "mirrored_2"])
def test_evaluation_is_abandoned_between_batches(kind, custom_sigterm):
    with _watching(kind, step=8) as watcher:
        assert watcher.check_between_eval_batches() is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert _wait_for(lambda: watcher.received is not None)
        with pytest.raises(preemption.Preempted) as error:
            watcher.check_between_eval_batches()
        assert _fields(error.value) == (8, "preempted", 75, True)


# --- the process: prompt signals and a prompt exit ----------------------

def _python(code, **popen):
    """Starts `python -c code` in the repository, pipes on stdout/stderr."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT, **popen)


class _Lines:
    """Collects a pipe's lines in a thread (a blocked read never outlives a
    test's timeout)."""

    def __init__(self, pipe):
        self.lines = []
        self._thread = threading.Thread(target=self._read, args=(pipe,),
                                        daemon=True)
        self._thread.start()

    def _read(self, pipe):
        for line in pipe:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern, proc, seconds):
        """The first match of `pattern` in a line, waiting while `proc`
        runs; None if there is none within `seconds`."""
        regex = re.compile(pattern)
        found = []

        def seen():
            found[:] = [m for m in map(regex.search, list(self.lines)) if m]
            return found or proc.poll() is not None

        _wait_for(seen, seconds)
        seen()  # The lines printed just before the process ended.
        return found[0] if found else None

    def text(self):
        self._thread.join(timeout=10)  # EOF once the process is gone.
        return "\n".join(self.lines)


def _ours(stderr_text):
    """The lines tf-lbsgd printed (TensorFlow logs its own on stderr)."""
    return [line for line in stderr_text.splitlines()
            if line.startswith("tf-lbsgd:")]


def _catches(pid, signum):
    """Whether process `pid` has a handler for `signum` (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except FileNotFoundError:  # Gone.
        return False
    mask = int(re.search(r"SigCgt:\s*([0-9a-f]+)", status).group(1), 16)
    return bool(mask & (1 << (signum - 1)))


def test_second_ctrl_c_quits_at_once_while_tensorflow_blocks():
    # The main thread waits inside a TensorFlow kernel that never returns,
    # as it does during a compilation or a training loop: no Python signal
    # handler can run there, the watcher's thread reacts all the same.
    proc = _python("""\
        import tensorflow as tf
        from tf_lbsgd import preemption
        strategy = tf.distribute.get_strategy()
        watcher = preemption.PreemptionWatcher(strategy, tf.Variable(3))
        queue = tf.queue.FIFOQueue(1, tf.int32)
        print("blocking", flush=True)
        queue.dequeue()
        """)
    try:
        out, err = _Lines(proc.stdout), _Lines(proc.stderr)
        assert out.wait_for("blocking", proc, 60), err.text()
        time.sleep(0.2)  # Into the kernel.
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        assert err.wait_for("press Ctrl-C again", proc, 10), err.text()
        acknowledged = time.monotonic() - sent
        assert proc.poll() is None  # Still blocked: it stops at a safe point.
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        code = proc.wait(timeout=10)
        quit_after = time.monotonic() - sent
    finally:
        proc.kill()
        proc.wait()
    assert code == exits.INTERRUPTED_EXIT_CODE
    assert _ours(err.text()) == [
        "tf-lbsgd: interrupted: stopping at the next safe point to save a "
        "checkpoint (press Ctrl-C again to quit at once without saving)",
        "tf-lbsgd: interrupted again: quitting without saving"]
    # Measured: 5 ms to the acknowledgement, 0.1 s to the exit; the limits
    # catch a wait for the kernel (which never returns).
    assert acknowledged < 5 and quit_after < 5


@pytest.mark.parametrize("code", [exits.PREEMPTED_EXIT_CODE,
                                  exits.INTERRUPTED_EXIT_CODE])
def test_exit_now_does_not_wait_for_a_hanging_teardown(code):
    proc = _python(f"""\
        import atexit, threading, time
        from tf_lbsgd import exits
        # Two teardowns that never end: a thread the interpreter would join
        # and an exit handler.
        threading.Thread(target=time.sleep, args=(600,)).start()
        atexit.register(time.sleep, 600)
        print("checkpoint saved", end="")  # Not flushed yet.
        exits.exit_now({code})
        """)
    try:
        stdout, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == code
    assert stdout == "checkpoint saved"


# --- end to end through the CLI ----------------------------------------

# k = 2 replicas x n = 16 (1875 steps per epoch), ResNet-8 of width 8, loops
# of 2 steps; no XLA (its compilation would only make each run longer).
BINDINGS = [
    "distribute.build_strategy.num_replicas = 2",
    "train_lib.run.per_replica_batch_size = 16",
    "resnet_cifar.width = 8",
    "train_lib.run.steps_per_loop = 2",
    "train_lib.run.checkpoint_every_steps = 1000",
    "train_lib.run.jit_compile = False",
    "train_lib.run.export = False",
]


def _cli(model_dir, mode, *bindings):
    """Starts the CLI on the small job, with absl's INFO log on stderr
    (orbit's messages, which the tests wait for); returns (proc, stdout,
    stderr)."""
    command = [sys.executable, "-m", "tf_lbsgd", f"--model_dir={model_dir}",
               f"--mode={mode}", "--gin_file=experiments/fashion_mnist_default",
               "--verbosity=0"]
    command += [f"--gin_bindings={b}" for b in BINDINGS + list(bindings)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO_ROOT)
    return proc, _Lines(proc.stdout), _Lines(proc.stderr)


def _signal_at(proc, out, err, pattern, signum, delay=0.0):
    """Sends `signum` once stderr (orbit's messages in the absl log)
    matches `pattern` (and `delay` passed); returns the match and the
    seconds from the signal to the exit."""
    try:
        # The limits only catch a hang (a run here takes ~10 s when idle).
        match = err.wait_for(pattern, proc, 300)
        assert match, (out.text() + err.text())[-3000:]
        time.sleep(delay)
        proc.send_signal(signum)
        sent = time.monotonic()
        proc.wait(timeout=120)
        return match, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _progress_steps(stdout, total):
    return [int(s) for s in re.findall(rf"^step (\d+)/{total}\b", stdout,
                                       re.MULTILINE)]


def _eval_tags(model_dir):
    tags = set()
    for path in glob.glob(os.path.join(model_dir, "validation", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update((v.tag, event.step) for v in event.summary.value)
    return tags


def _metrics(model_dir):
    with open(os.path.join(model_dir, "metrics.json")) as f:
        return json.load(f)


def _say_saved(verb, step, model_dir):
    return (f"tf-lbsgd: {verb} at step {step}: checkpoint saved in "
            f"{model_dir}; re-run the same command to resume")


def test_cli_stops_save_exit_and_resume(tmp_path):
    # One job run three times with the same command: Ctrl-C in training,
    # SIGTERM in an evaluation, then to the end. n = 64 (468.75 steps per
    # epoch, 79 evaluation batches): 4 steps, with evaluations at step 2
    # (0.0043 epochs) and at the end.
    model_dir = str(tmp_path / "model")
    job = ("train_and_eval", "train_lib.run.per_replica_batch_size = 64",
           "train_lib.run.epochs = 0.0086",
           "train_lib.run.eval_every_epochs = 0",
           "train_lib.run.eval_at_epochs = [0.0043]")

    # 1. Ctrl-C during the first loop (its trace): the run stops after it,
    # at step 2, where an evaluation was due; it is left to the re-run.
    proc, out, err = _cli(model_dir, *job)
    _, seconds = _signal_at(proc, out, err, r"training until step 2",
                            signal.SIGINT)
    stdout, stderr = out.text(), err.text()
    assert proc.returncode == exits.INTERRUPTED_EXIT_CODE, stderr[-3000:]
    assert "Traceback" not in stderr
    assert _ours(stderr) == [
        "tf-lbsgd: interrupted: stopping at the next safe point to save a "
        "checkpoint (press Ctrl-C again to quit at once without saving)",
        _say_saved("interrupted", 2, model_dir)]
    assert _progress_steps(stdout, 4) == [2]
    assert "validation at step" not in stdout
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-2")
    metrics = _metrics(model_dir)
    assert metrics["global_step"] == 2 and "eval" not in metrics
    assert metrics[preemption.PENDING_EVAL_KEY] == 2
    assert seconds < 60  # Measured: 4.3 s (trace, 2 steps, the save).

    # 2. The same command evaluates step 2 first; SIGTERM abandons it.
    proc, out, err = _cli(model_dir, *job)
    _, seconds = _signal_at(proc, out, err,
                            r"eval \| step: +2 \| running complete",
                            signal.SIGTERM, delay=0.3)
    stdout, stderr = out.text(), err.text()
    assert proc.returncode == exits.PREEMPTED_EXIT_CODE, stderr[-3000:]
    assert "Traceback" not in stderr
    assert _ours(stderr) == [_say_saved("preempted", 2, model_dir)]
    assert "validation at step" not in stdout  # Abandoned: never completed...
    assert not _progress_steps(stdout, 4)  # ...and no training after it.
    metrics = _metrics(model_dir)
    assert "eval" not in metrics  # Nothing recorded, not even in events.
    assert not {tag for tag, _ in _eval_tags(model_dir)} & {
        "top1_error", "loss"}
    assert metrics[preemption.PENDING_EVAL_KEY] == 2
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-2")
    assert seconds < 10  # Measured: 0.4 s (a batch, metrics.json, exit).

    # 3. The same command: the evaluation of step 2, training, the last one.
    proc, out, err = _cli(model_dir, *job)
    assert proc.wait(timeout=300) == 0, err.text()[-3000:]
    stdout = out.text()
    assert re.findall(r"^validation at step (\d+) \|", stdout, re.M) == [
        "2", "4"]
    assert stdout.index("validation at step 2 |") < stdout.index("step 4/4")
    metrics = _metrics(model_dir)
    assert preemption.PENDING_EVAL_KEY not in metrics
    assert metrics["global_step"] == 4
    assert len(metrics["eval"]["top1_error_history"]) == 2
    assert {("top1_error", 2), ("top1_error", 4)} <= _eval_tags(
        model_dir)
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-4")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_cli_stopped_while_starting_says_so_in_one_line(tmp_path, signum):
    proc, out, err = _cli(str(tmp_path / "model"), "train",
                          "train_lib.run.epochs = 0.002")
    try:
        # As soon as the CLI has its handlers (SIGINT's is installed first;
        # Python has one of its own from the start), while TensorFlow loads.
        assert _wait_for(lambda: proc.poll() is not None
                         or _catches(proc.pid, signal.SIGTERM), 30)
        proc.send_signal(signum)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    verb = "preempted" if signum == signal.SIGTERM else "interrupted"
    stderr = err.text()
    assert proc.returncode == exits.exit_code(signum.name), stderr[-3000:]
    assert _ours(stderr) == [
        f"tf-lbsgd: {verb} before training started: nothing saved; re-run "
        f"the same command to start"]
    assert "Traceback" not in stderr
    assert out.text() == ""



def test_two_workers_abandon_an_evaluation_together(tmp_path):
    # SIGTERM to one of two worker processes during an evaluation: both
    # leave it at the same batch (a collective decision) and exit 75. A
    # worker left alone in the evaluation would wait forever for its peer in
    # the all-reduce of the evaluation's sums.
    model_dir = str(tmp_path / "model")
    command = [sys.executable, os.path.join(REPO_ROOT, "tools",
                                            "launch_local.py"),
               "--workers", "2", "--", sys.executable, "-m", "tf_lbsgd",
               f"--model_dir={model_dir}", "--mode=train_and_eval",
               "--gin_file=experiments/fashion_mnist_default",
               "--gin_file=distribute/multi_worker_ring", "--verbosity=0"]
    command += [f"--gin_bindings={b}" for b in BINDINGS[1:] + [
        "train_lib.run.per_replica_batch_size = 64",  # 79 batches.
        "train_lib.run.epochs = 0.0043",  # 2 steps, then the evaluation.
        "train_lib.run.eval_every_epochs = 0"]]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=REPO_ROOT)
    out = _Lines(proc.stdout)
    try:
        assert out.wait_for(r"\[worker 1\] .* eval \| step: +2 \| running",
                            proc, 300), out.text()[-3000:]
        time.sleep(0.3)
        pid = int(out.wait_for(r"started worker 1 \(pid (\d+)\)", proc,
                               1).group(1))
        os.kill(pid, signal.SIGTERM)
        sent = time.monotonic()
        proc.wait(timeout=120)
        seconds = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = out.text()
    assert proc.returncode == exits.PREEMPTED_EXIT_CODE, output[-3000:]
    for worker in (0, 1):
        assert (f"[worker {worker}] tf-lbsgd: preempted at step 2: "
                f"checkpoint saved in {model_dir}") in output
        assert f"worker {worker} was preempted" in output
    assert "validation at step" not in output and "Traceback" not in output
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-2")
    assert _metrics(model_dir)[preemption.PENDING_EVAL_KEY] == 2
    assert seconds < 30  # Measured: 0.5 s (at most 10 batches, the exit).
