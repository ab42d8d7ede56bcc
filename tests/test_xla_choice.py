"""jit_compile = 'auto' (issue 19): the choice per processor, its reason in
metrics.json and the summary line, and a bad setting refused by name."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import progress
from tf_lbsgd import train_lib
from tf_lbsgd import xla_choice
from tf_lbsgd.data import adapters

EPYC_FLAGS = "fpu sse sse2 avx avx2 fma"
XEON_FLAGS = EPYC_FLAGS + " avx512f avx512_bf16 amx_bf16 amx_tile"


def _cpuinfo(flags):
    return f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n"


@pytest.mark.parametrize("flags, expected", [
    (EPYC_FLAGS, True),  # Measured: XLA 1.46x faster for the small model.
    (XEON_FLAGS, False),  # Measured: no faster (ResNet-50 at half speed).
    (EPYC_FLAGS + " avx512f avx512_bf16", False),
])
def test_auto_follows_the_cpu(flags, expected):
    choice, reason = xla_choice.choose_jit_compile(
        "auto", cpuinfo_text=_cpuinfo(flags))
    assert choice is expected
    assert reason.startswith("auto: a CPU ")


def test_auto_without_cpu_flags_keeps_tensorflows_default():
    assert xla_choice.choose_jit_compile("auto", cpuinfo_text="") == (
        False, "auto: a CPU of unknown flags: TensorFlow's default")


def test_auto_on_an_accelerator_compiles():
    choice, reason = xla_choice.choose_jit_compile(
        "auto", accelerators=["GPU"], cpuinfo_text=_cpuinfo(XEON_FLAGS))
    assert choice is True and "GPU" in reason


@pytest.mark.parametrize("setting", [True, False])
def test_an_explicit_setting_wins(setting):
    assert xla_choice.choose_jit_compile(
        setting, cpuinfo_text=_cpuinfo(EPYC_FLAGS)) == (
            setting, f"set: jit_compile = {setting}")


@pytest.mark.parametrize("setting", ["yes", "True", 1, None])
def test_a_bad_setting_is_named(setting):
    with pytest.raises(ValueError) as error:
        xla_choice.choose_jit_compile(setting, where="Recipe.")
    assert str(error.value) == (f"Recipe.jit_compile must be True, False or "
                                f"'auto', got {setting!r}")


def _model_fn(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape),
                             keras.layers.Dense(num_classes)])


def _data():
    rng = np.random.default_rng(0)
    arrays = (rng.normal(size=(16, 4)).astype("f4"),
              rng.integers(0, 3, size=16).astype("i4"))
    return adapters.from_arrays(arrays, num_classes=3)


def test_a_run_records_and_prints_its_choice(tmp_path):
    model_dir = str(tmp_path / "run")
    result = train_lib.train_model(
        model_dir, _data(), _model_fn, tf.distribute.get_strategy(),
        mode="train", per_replica_batch_size=8, epochs=1, export=False,
        jit_compile="auto")
    expected = xla_choice.choose_jit_compile("auto")  # This host's.
    with open(f"{model_dir}/metrics.json", encoding="utf-8") as f:
        recorded = json.load(f)["xla"]
    assert (recorded["jit_compile"], recorded["reason"]) == expected
    assert result.metrics["xla"] == recorded
    training = progress.final_summary(result.metrics, model_dir).splitlines()[0]
    # Thread settings may follow (set by an earlier test of the process).
    assert (f", XLA {'on' if expected[0] else 'off'} ({expected[1]})"
            in training)


def test_a_bad_setting_stops_the_run_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"^train_lib\.run\.jit_compile must "
                       r"be True, False or 'auto', got 'fast'$"):
        train_lib.train_model(
            str(tmp_path / "run"), _data(), _model_fn,
            tf.distribute.get_strategy(), mode="train",
            per_replica_batch_size=8, epochs=1, jit_compile="fast")
    assert not (tmp_path / "run").exists()
