"""Bad input to `tf-lbsgd`: exit 2, one line naming the value, nothing written.

The real CLI runs in subprocesses: those failing before TensorFlow is
imported (a bad --model_dir or flag, --help) take under a second; the three
that need TensorFlow (one per path an error takes through the CLI) start
together, so that their imports share the cores. The checks themselves are
tested in-process here and in test_distribute.py and test_models.py; a
missing data set (FileNotFoundError) in test_cli_e2e.py.
"""

import errno
import os
import re
import resource
import signal
import subprocess
import sys

import gin
import pytest

from tf_lbsgd import checks
from tf_lbsgd import cli
from tf_lbsgd import config
from tf_lbsgd import train_lib

ERROR_PREFIX = "tf-lbsgd: error:"


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    return env


def _start(*args, env=None, preexec_fn=None):
    return subprocess.Popen(
        [sys.executable, "-m", "tf_lbsgd", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env or _env(),
        preexec_fn=preexec_fn)


def _finish(process):
    stdout, stderr = process.communicate(timeout=600)
    return process.returncode, stdout, stderr


def _cli(*args, **kwargs):
    return _finish(_start(*args, **kwargs))


def _the_error_line(returncode, stderr):
    """Asserts exit 2 and exactly one error line; returns that line."""
    assert returncode == cli.CONFIG_ERROR_EXIT_CODE, stderr[-3000:]
    errors = [line for line in stderr.splitlines()
              if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def _assert_one_clean_line(returncode, stderr):
    line = _the_error_line(returncode, stderr)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip() == line, stderr[-3000:]  # Nothing else printed.
    return line


# --- Before TensorFlow: --model_dir, flags, --help -------------------------


def test_model_dir_that_is_a_file(tmp_path):
    model_dir = tmp_path / "a_file"
    model_dir.write_text("mine")
    returncode, _, stderr = _cli(f"--model_dir={model_dir}")
    line = _assert_one_clean_line(returncode, stderr)
    assert f"--model_dir {model_dir} exists and is not a directory" in line
    assert model_dir.read_text() == "mine"


def _no_file_writes():
    """In the child: every write to a file fails (EFBIG), as on a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def test_model_dir_where_writes_fail(tmp_path):
    """A file size limit of 0 (RLIMIT_FSIZE) refuses the probe's write like
    a full disk would: the directory is refused before anything runs."""
    model_dir = tmp_path / "new" / "model"
    returncode, _, stderr = _cli(f"--model_dir={model_dir}",
                                 preexec_fn=_no_file_writes)
    line = _assert_one_clean_line(returncode, stderr)
    assert (f"--model_dir {model_dir} cannot be created: cannot write a file "
            f"in {tmp_path} (File too large)") in line
    assert os.listdir(tmp_path) == []  # Neither the directory nor the probe.


def test_bad_flag_value_and_missing_model_dir():
    returncode, _, stderr = _cli("--model_dir=x", "--mode=trian")
    line = _assert_one_clean_line(returncode, stderr)
    assert "--mode=trian" in line and "train_and_eval" in line
    returncode, _, stderr = _cli()
    assert "--model_dir is required" in _assert_one_clean_line(returncode,
                                                               stderr)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_the_tools_flags_and_exits_0(flag):
    returncode, stdout, stderr = _cli(flag)
    assert returncode == 0, stderr
    for name in ("--model_dir:", "--gin_file:", "--gin_bindings:", "--mode:",
                 "--[no]traceback:"):
        assert name in stdout
    assert "USAGE: tf-lbsgd" in stdout
    assert "--alsologtostderr" not in stdout  # absl's own: --helpfull only.


def test_helpfull_exits_0():
    returncode, stdout, _ = _cli("--helpfull")
    assert returncode == 0
    assert "--model_dir" in stdout and "--alsologtostderr" in stdout


# --- With TensorFlow: one case per path through the CLI --------------------

TF_CASES = {
    # A configuration error before train_lib.run (gin files, TF_CONFIG).
    "no_job": ["--gin_file=precision/mixed_bfloat16"],
    # In train_lib.run, before it makes model_dir.
    "zero_replicas": ["--gin_bindings=distribute.build_strategy.num_replicas"
                      " = 0"],
    # In train_lib.run, after it made model_dir (building the model): the
    # CLI removes the empty directories it made. With --traceback.
    "wide": ["--gin_bindings=resnet_cifar.width = 'wide'", "--traceback"],
    # A TPU strategy on a host without a TPU: refused while the strategy is
    # built, before model_dir is made.
    "tpu": ["--gin_file=experiments/fashion_mnist_default",
            "--gin_file=distribute/tpu"],
    # A model_dir another run holds (run_lock): refused, nothing touched.
    "locked": [],
}
# Holds the lock of model_dir (argv[1]) until its stdin closes.
_HOLDER = """import sys
from tf_lbsgd import run_lock
with run_lock.hold(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture(scope="module")
def tf_runs(tmp_path_factory):
    """Runs every TF_CASES case at once; {case: (returncode, stderr, dir)}."""
    root = tmp_path_factory.mktemp("cli_errors")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(root / "locked" / "model")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    started = {}
    for case, args in TF_CASES.items():
        model_dir = root / case / "runs" / "model"  # Nothing of it exists.
        if case == "locked":  # The holder's.
            model_dir = root / case / "model"
        started[case] = (_start(f"--model_dir={model_dir}", *args),
                         root / case)
    results = {}
    for case, (process, case_dir) in started.items():
        returncode, _, stderr = _finish(process)
        results[case] = returncode, stderr, case_dir
    holder.communicate("", timeout=60)
    results["locked"] += (holder.pid,)
    return results


def _assert_nothing_written(case_dir):
    assert not case_dir.exists(), list(case_dir.rglob("*"))


def _clean_failure(tf_runs, case):
    """Asserts exit 2, one line alone on stderr, no model_dir; the line."""
    returncode, stderr, case_dir = tf_runs[case]
    line = _assert_one_clean_line(returncode, stderr)
    _assert_nothing_written(case_dir)
    return line


def test_gin_files_that_define_no_job(tf_runs):
    line = _clean_failure(tf_runs, "no_job")
    assert ("--gin_file precision/mixed_bfloat16 does not define "
            "train_lib.run.data, train_lib.run.model_fn, train_lib.run.epochs"
            ) in line
    assert "--gin_file replaces the default job" in line
    assert ("--gin_file=experiments/fashion_mnist_default "
            "--gin_file=precision/mixed_bfloat16") in line


def test_zero_replicas(tf_runs):
    line = _clean_failure(tf_runs, "zero_replicas")
    assert ("distribute.build_strategy.num_replicas must be a positive "
            "integer, got 0") in line


def test_tpu_strategy_without_a_tpu(tf_runs):
    line = _clean_failure(tf_runs, "tpu")
    assert ("distribute.build_strategy.kind = 'tpu' but no TPU was found at "
            "tpu_address 'local'") in line
    assert "run on a Cloud TPU VM" in line


def test_bad_model_width_with_traceback(tf_runs):
    returncode, stderr, case_dir = tf_runs["wide"]
    line = _the_error_line(returncode, stderr)
    assert "resnet_cifar.width must be a positive integer, got 'wide'" in line
    assert "Traceback (most recent call last)" in stderr  # --traceback
    assert stderr.rstrip().endswith(line)  # The one line comes last.
    _assert_nothing_written(case_dir)


def test_model_dir_held_by_another_run(tf_runs):
    returncode, stderr, case_dir, holder_pid = tf_runs["locked"]
    line = _assert_one_clean_line(returncode, stderr)
    assert f"is in use by another run: pid {holder_pid} on host" in line
    # Nothing of the refused run: only the holder's lock file was there.
    assert not list(case_dir.rglob("*.gin")) and not list(
        case_dir.rglob("events.*"))


# --- In-process: the checks and the message --------------------------------


def test_writable_directory_accepts_and_leaves_nothing(tmp_path):
    checks.writable_directory("--model_dir", str(tmp_path / "a" / "b"))
    checks.writable_directory("--model_dir", str(tmp_path))
    checks.writable_directory("--model_dir", "gs://bucket/run")  # Remote.
    assert os.listdir(tmp_path) == []


def test_writable_directory_under_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    expected = (f"--model_dir {tmp_path}/f/run cannot be created: "
                f"{tmp_path}/f is not a directory")
    with pytest.raises(ValueError, match=re.escape(expected)):
        checks.writable_directory("--model_dir", str(tmp_path / "f" / "run"))


def test_writable_directory_read_only_even_for_root():
    """/proc takes no new file, whoever asks (root ignores permission bits,
    so a chmod-ed directory would not test this as root)."""
    with pytest.raises(ValueError, match="--model_dir /proc/tf_lbsgd_test "
                                         "cannot be created: cannot write a "
                                         "file in /proc"):
        checks.writable_directory("--model_dir", "/proc/tf_lbsgd_test")


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs filled to its last byte (needs mount rights: root)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
        capture_output=True, check=False)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        filler = os.open(mount_point / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(filler, b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        finally:
            os.close(filler)
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_writable_directory_on_a_full_disk(full_disk):
    with pytest.raises(ValueError, match=r"--model_dir .*/disk is not "
                                         r"writable: cannot write a file in "
                                         r".*/disk \(No space left on "
                                         r"device\)"):
        checks.writable_directory("--model_dir", str(full_disk))
    assert os.listdir(full_disk) == ["filler"]


def test_unbound_required_names_what_a_job_lacks():
    config.parse(["precision/mixed_bfloat16"])
    assert config.unbound_required(train_lib.run) == [
        "train_lib.run.data", "train_lib.run.model_fn", "train_lib.run.epochs"]
    gin.clear_config()
    config.parse([cli.DEFAULT_GIN_FILE, "distribute/multi_worker_ring"])
    assert config.unbound_required(train_lib.run) == []


@gin.configurable
def _divides(numerator=1, denominator=1):
    return numerator / denominator


def test_one_line_keeps_the_configurable_of_a_gin_error():
    gin.bind_parameter("_divides.denominator", "two")
    with pytest.raises(TypeError) as raised:
        _divides()  # pylint: disable=no-value-for-parameter
    assert "In call to configurable '_divides'" in str(raised.value)
    assert cli._one_line(raised.value) == (  # pylint: disable=protected-access
        "unsupported operand type(s) for /: 'int' and 'str' "
        "(in gin configurable _divides)")


def test_a_lost_peer_is_one_line_naming_the_newest_checkpoint(tmp_path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tf_lbsgd import cli  # pylint: disable=import-outside-toplevel
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-25"\n'
        'all_model_checkpoint_paths: "ckpt-25"\n')
    (tmp_path / "ckpt-25.index").write_bytes(b"")
    error = tf.errors.DeadlineExceededError(
        None, None, "{{function_node __wrapped__CollectiveReduceV2_Nordering_"
        "token_1_device_/job:worker/replica:0/task:1/device:CPU:0}} "
        "Collective ops is aborted by: Deadline Exceeded\n\nRPC: "
        "/tensorflow.CoordinationService/Heartbeat")
    message = cli.lost_peer_message(error, str(tmp_path))
    assert message == (
        "the workers lost a peer (DeadlineExceededError: Collective ops is "
        "aborted by: Deadline Exceeded): its host is down, its link cut or "
        "its process dead (a collective gives up after "
        "distribute.build_strategy.timeout_seconds); the newest checkpoint, "
        f"ckpt-25, is kept in {tmp_path}; re-run the same command on every "
        "worker to resume")
    # Anything else is not mistaken for it.
    assert cli.lost_peer_message(tf.errors.DeadlineExceededError(
        None, None, "reading the input took too long"), str(tmp_path)) is None
    assert cli.lost_peer_message(ValueError("Collective"), "d") is None
