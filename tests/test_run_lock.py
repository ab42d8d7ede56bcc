"""One run per model_dir: the lock file, with real second processes.

A holder is a real Python process (it holds the lock until its stdin
closes, or until it is killed); dead pids come from processes that have
exited.
"""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys

import pytest

from tf_lbsgd import run_lock

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_HOLDER = """\
import sys
from tf_lbsgd import run_lock
with run_lock.hold(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


@pytest.fixture
def model_dir(tmp_path):
    return str(tmp_path / "model")


def _lock_path(model_dir):
    return os.path.join(model_dir, run_lock.LOCK_FILE)


def _start_holder(tmp_path, model_dir):
    """A process holding the lock of model_dir until its stdin closes."""
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    proc = subprocess.Popen(
        [sys.executable, str(script), model_dir, "--marker=the-first-run"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=REPO_ROOT)
    line = proc.stdout.readline()
    if line != "held\n":
        proc.kill()
        pytest.fail(f"the holder did not take the lock: {line!r} "
                    f"{proc.communicate()[1]}")
    return proc


def _dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _write_lock(model_dir, text):
    os.makedirs(model_dir, exist_ok=True)
    with open(_lock_path(model_dir), "w") as f:
        f.write(text)


def _record(pid, host=None):
    return json.dumps({"pid": pid, "host": host or socket.gethostname(),
                       "user": "someone", "started": "2025-01-02T03:04:05+00:00",
                       "command": "tf-lbsgd --model_dir=runs/x"})


def test_hold_writes_the_holder_and_removes_the_file_at_the_end(model_dir):
    with run_lock.hold(model_dir) as lock:
        assert lock.held
        with open(_lock_path(model_dir)) as f:
            holder = json.load(f)
        assert holder["pid"] == os.getpid()
        assert holder["host"] == socket.gethostname()
        assert holder["command"] == shlex.join(sys.orig_argv)
        assert holder["started"][:2] == "20"
    assert not lock.held
    assert not os.path.exists(_lock_path(model_dir))
    lock.release()  # Again: nothing happens.
    with run_lock.hold(model_dir):  # Free for the next run.
        pass


def test_second_run_in_this_process_is_refused(model_dir):
    with run_lock.hold(model_dir):
        with pytest.raises(run_lock.ModelDirLocked,
                           match=f"pid {os.getpid()} on host"):
            run_lock.acquire(model_dir)
        assert os.path.exists(_lock_path(model_dir))
    assert not os.path.exists(_lock_path(model_dir))


def test_refusal_names_the_holding_process(tmp_path, model_dir):
    holder = _start_holder(tmp_path, model_dir)
    try:
        with pytest.raises(run_lock.ModelDirLocked) as raised:
            run_lock.acquire(model_dir)
        message = str(raised.value)
        assert isinstance(raised.value, RuntimeError)
        assert message.startswith(f"{model_dir} is in use by another run: "
                                  f"pid {holder.pid} on host "
                                  f"{socket.gethostname()}")
        assert "holder.py" in message and "--marker=the-first-run" in message
        assert "started 20" in message
    finally:
        out, err = holder.communicate("\n", timeout=60)
    assert out == "released\n", err
    with run_lock.hold(model_dir) as lock:  # The holder released it.
        assert lock.holder["pid"] == os.getpid()


def test_stale_lock_of_a_dead_pid_is_taken_over_with_a_warning(model_dir):
    pid = _dead_pid()
    _write_lock(model_dir, _record(pid))
    messages = []
    with run_lock.hold(model_dir, log=messages.append):
        with open(_lock_path(model_dir)) as f:
            assert json.load(f)["pid"] == os.getpid()
    assert len(messages) == 1
    assert messages[0].startswith(f"took over the stale lock "
                                  f"{_lock_path(model_dir)} of a run that is "
                                  f"gone: pid {pid} on host")
    assert "tf-lbsgd --model_dir=runs/x" in messages[0]


def test_free_flock_decides_even_if_the_pid_was_reused(model_dir):
    """The recorded pid runs (this test's parent), but no process holds the
    lock file's flock: its holder is gone and the pid is someone else's."""
    _write_lock(model_dir, _record(os.getppid()))
    messages = []
    with run_lock.hold(model_dir, log=messages.append):
        pass
    assert f"pid {os.getppid()} now belongs to another process" in messages[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGTERM", "SIGKILL"])
def test_lock_of_a_killed_holder_is_stale(tmp_path, model_dir, signum):
    """Python's default SIGTERM action ends the process without unwinding
    (like SIGKILL): the file stays, the flock goes with the process."""
    holder = _start_holder(tmp_path, model_dir)
    holder.send_signal(signum)
    holder.communicate(timeout=60)
    assert holder.returncode == -signum
    assert os.path.exists(_lock_path(model_dir))
    messages = []
    with run_lock.hold(model_dir, log=messages.append):
        pass
    assert f"of a run that is gone: pid {holder.pid} on host" in messages[0]
    assert not os.path.exists(_lock_path(model_dir))


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_released_when_the_run_raises(model_dir, error):
    with pytest.raises(error):
        with run_lock.hold(model_dir):
            raise error("the run failed")
    assert not os.path.exists(_lock_path(model_dir))


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2]", '{"pid": "x"}'],
                         ids=["broken_json", "empty", "a_list", "bad_pid"])
def test_garbage_lock_file_is_refused_with_the_fix(model_dir, text):
    _write_lock(model_dir, text)
    path = _lock_path(model_dir)
    with pytest.raises(run_lock.ModelDirLocked) as raised:
        run_lock.acquire(model_dir)
    assert str(raised.value) == (
        f"the lock file {path} is not a lock of tf-lbsgd (its content is "
        f"{text!r}), so whether a run uses {model_dir} is unknown. If no run "
        f"uses {model_dir}, delete {path} and try again")
    with open(path) as f:
        assert f.read() == text  # Left as it was.


def test_lock_from_another_host_cannot_be_checked(model_dir):
    _write_lock(model_dir, _record(_dead_pid(), host="elsewhere.example"))
    path = _lock_path(model_dir)
    with pytest.raises(run_lock.ModelDirLocked) as raised:
        run_lock.acquire(model_dir)
    message = str(raised.value)
    assert message.startswith(f"{model_dir} is locked by another run, pid ")
    assert "on host elsewhere.example (user someone)" in message
    assert (f"This host ({socket.gethostname()}) cannot tell whether that "
            f"process still runs: check on elsewhere.example (e.g. `ps -p "
            in message)
    assert f"if it is gone, delete {path} and try again" in message
    assert os.path.exists(path)


def test_remote_model_dir_runs_unlocked_with_a_warning():
    messages = []
    with run_lock.hold("gs://bucket/run", log=messages.append) as lock:
        assert lock is None
    assert "gs://bucket/run is not a local directory" in messages[0]


_CONTENDER = """\
import os, sys, time
from tf_lbsgd import run_lock
model_dir, go = sys.argv[1], sys.argv[2]
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
try:
    lock = run_lock.acquire(model_dir, log=lambda message: None)
except run_lock.ModelDirLocked as refused:
    print("refused", refused, flush=True)
    sys.exit(0)
print("won", flush=True)
sys.stdin.readline()
lock.release()
"""


@pytest.mark.parametrize("stale", [False, True], ids=["free", "stale"])
def test_runs_starting_together_one_wins(tmp_path, model_dir, stale):
    """Four processes try at the same moment (a free model_dir, or one with
    a stale lock to take over): one wins, the others are refused naming
    it."""
    if stale:
        _write_lock(model_dir, _record(_dead_pid()))
    script, go = tmp_path / "contender.py", str(tmp_path / "go")
    script.write_text(_CONTENDER)
    procs = [subprocess.Popen([sys.executable, str(script), model_dir, go],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=REPO_ROOT) for _ in range(4)]
    try:
        for proc in procs:
            assert proc.stdout.readline() == "ready\n"
        open(go, "w").close()
        results = {proc.pid: proc.stdout.readline() for proc in procs}
    finally:
        for proc in procs:
            proc.communicate("\n", timeout=60)
    winners = [pid for pid, line in results.items() if line == "won\n"]
    assert len(winners) == 1, results
    for pid, line in results.items():
        if pid != winners[0]:
            assert line.startswith(f"refused {model_dir} is in use by another "
                                   f"run: pid {winners[0]} on host"), line
    assert not os.path.exists(_lock_path(model_dir))


_OPENER = """\
import fcntl, sys
lock_file = open(sys.argv[1])
fcntl.flock(lock_file, fcntl.LOCK_EX)
print("flocked", flush=True)
sys.stdin.readline()
"""


def test_flock_kept_by_another_process_after_the_holder_died(tmp_path,
                                                             model_dir):
    """E.g. a child the holder forked: the lock is not stale, and the
    message says how to find that process."""
    pid = _dead_pid()
    _write_lock(model_dir, _record(pid))
    script = tmp_path / "opener.py"
    script.write_text(_OPENER)
    opener = subprocess.Popen([sys.executable, str(script),
                               _lock_path(model_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert opener.stdout.readline() == "flocked\n"
        with pytest.raises(run_lock.ModelDirLocked) as raised:
            run_lock.acquire(model_dir)
    finally:
        opener.communicate("\n", timeout=60)
    assert str(raised.value).startswith(f"{model_dir} is locked by pid {pid} ")
    assert (f"that pid is gone, but another process (a child of it?) still "
            f"holds the lock file open: find it with `fuser "
            f"{_lock_path(model_dir)}`") in str(raised.value)
    with run_lock.hold(model_dir, log=lambda message: None):
        pass  # Once that process is gone, the lock is stale.
