"""cpu_threads = 'auto' (issue 19): one thread per op for several logical
replicas where that measured faster; set before TensorFlow starts, said in
metrics.json's `cpu_threads` and the summary line."""

import os
import subprocess
import sys
import textwrap

import pytest

from tf_lbsgd import cpu_threads
from tf_lbsgd import progress

EPYC_FLAGS = "fpu sse sse2 avx avx2 fma"
XEON_FLAGS = EPYC_FLAGS + " avx512f avx512_bf16 amx_bf16 amx_tile"


def _cpuinfo(flags):
    return f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n"


def test_auto_takes_one_thread_per_op_for_replicas_on_an_amx_cpu():
    inter, intra, reason = cpu_threads.choose("auto", 8, _cpuinfo(XEON_FLAGS))
    assert (inter, intra) == (min(8, os.cpu_count()), 1)
    assert reason.startswith("auto: one thread per op")


@pytest.mark.parametrize("flags, replicas", [
    (EPYC_FLAGS, 8),  # Not measured there: TensorFlow's default.
    (XEON_FLAGS, 1),  # One replica: its ops want every core.
    ("", 8)])
def test_auto_keeps_tensorflows_default_elsewhere(flags, replicas):
    inter, intra, reason = cpu_threads.choose("auto", replicas,
                                              _cpuinfo(flags))
    assert (inter, intra) == (0, 0)
    assert "TensorFlow's default" in reason


def test_explicit_settings():
    assert cpu_threads.choose("default", 8)[:2] == (0, 0)
    assert cpu_threads.choose((4, 1), 8) == (4, 1, "set: (4, 1)")


@pytest.mark.parametrize("setting", ["fast", (1,), (1, -1), (1.5, 1),
                                     (True, 1)])
def test_bad_setting_is_refused_by_name(setting):
    with pytest.raises(ValueError, match=(
            r"distribute.build_strategy.cpu_threads must be 'auto', "
            r"'default' or a pair \(inter_op, intra_op\) of thread counts "
            r">= 0, got ")):
        cpu_threads.choose(setting, 8)


def test_after_tensorflow_started_the_counts_in_force_are_kept(monkeypatch):
    """conftest's logical CPUs have started TensorFlow in this process."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    monkeypatch.setattr(cpu_threads, "_chosen",
                        dict(cpu_threads._chosen))  # pylint: disable=protected-access
    tf.constant(1.0) + 1.0
    current = (tf.config.threading.get_inter_op_parallelism_threads(),
               tf.config.threading.get_intra_op_parallelism_threads())
    wanted = (current[0] + 1, current[1] + 1)
    cpu_threads.apply(*wanted, "set: test")
    chosen = cpu_threads.chosen()
    assert (chosen["inter_op"], chosen["intra_op"]) == current
    assert "not applied: TensorFlow was initialised before" in (
        chosen["reason"])


def test_build_strategy_sets_them_before_tensorflow_starts():
    script = textwrap.dedent("""
        import tensorflow as tf
        from tf_lbsgd import cpu_threads, distribute
        strategy = distribute.build_strategy("mirrored", num_replicas=4,
                                             cpu_threads=(3, 1))
        print(strategy.num_replicas_in_sync,
              tf.config.threading.get_inter_op_parallelism_threads(),
              tf.config.threading.get_intra_op_parallelism_threads(),
              cpu_threads.chosen()["reason"])
    """)
    result = subprocess.run([sys.executable, "-c", script],
                            capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[:3] == ["4", "3", "1"]
    assert result.stdout.strip().endswith("set: (3, 1)")


def test_the_summary_line_says_what_was_chosen():
    metrics = {"global_step": 5, "epochs": 1.0, "global_batch_size": 256,
               "num_replicas": 8, "train_wall_time_s": 10.0,
               "cpu_threads": {"inter_op": 2, "intra_op": 1,
                               "reason": "auto: why"}}
    line = progress.final_summary(metrics, "/nonexistent").splitlines()[0]
    assert line.endswith("1 thread(s) per op (auto: why)")
    metrics["cpu_threads"] = {"inter_op": 0, "intra_op": 0, "reason": "x"}
    assert "per op" not in progress.final_summary(
        metrics, "/nonexistent").splitlines()[0]


@pytest.mark.parametrize("text, setting", [
    ("auto", "auto"), ("default", "default"), ("2,1", (2, 1))])
def test_flag_values(text, setting):
    assert cpu_threads.parse_flag(text) == setting


@pytest.mark.parametrize("text", ["fast", "2", "2,x", "-1,1"])
def test_bad_flag_values_name_the_flag(text):
    with pytest.raises(ValueError, match="--cpu_threads must be"):
        cpu_threads.parse_flag(text)
