"""Tests for tf_lbsgd.schedules against independent numpy/Python formulas."""

import math

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import schedules

IMAGENET_TRAIN = 1281167
SPE_8K = IMAGENET_TRAIN / 8192  # ~156.39 iterations per epoch at kn = 8192.


def _values(schedule, steps):
    """Evaluates ``schedule`` at every step in ``steps`` in one call."""
    return np.asarray(schedule(tf.constant(steps, dtype=tf.int64)), dtype=np.float64)


def _nearest(x):
    """Round-half-up, written independently of the module under test."""
    return int(x + 0.5)


# --------------------------------------------------------------------------
# epochs_to_steps
# --------------------------------------------------------------------------


@pytest.mark.parametrize("epochs,spe,expected", [
    (0, 10, 0),
    (5, 10, 50),
    (5, SPE_8K, 782),        # 781.96
    (30, SPE_8K, 4692),      # 4691.8
    (80, SPE_8K, 12511),     # 12511.4
    (0.5, 3, 2),             # 1.5 rounds up
    (30, 60000 / 256, 7031),  # 7031.25
])
def test_epochs_to_steps(epochs, spe, expected):
    result = schedules.epochs_to_steps(epochs, spe)
    assert result == expected
    assert isinstance(result, int)


@pytest.mark.parametrize("epochs,spe,bad", [
    (-1, 10, "-1"),
    (5, 0, "0"),
    (5, -2.5, "-2.5"),
    (float("nan"), 10, "nan"),
])
def test_epochs_to_steps_errors(epochs, spe, bad):
    with pytest.raises(ValueError, match=bad):
        schedules.epochs_to_steps(epochs, spe)


# --------------------------------------------------------------------------
# Scaling rules (R1)
# --------------------------------------------------------------------------


def test_linear_scaling_rule():
    assert schedules.linear_scaling_rule(8192) == pytest.approx(3.2)
    assert schedules.linear_scaling_rule(256) == pytest.approx(0.1)
    assert schedules.linear_scaling_rule(512, base_lr=0.2) == pytest.approx(0.4)


def test_linear_scaling_rule_gin():
    gin.parse_config(["linear_scaling_rule.base_lr = 0.05"])
    assert schedules.linear_scaling_rule(8192) == pytest.approx(0.05 * 32)


def test_scaled_learning_rate_variants():
    assert schedules.scaled_learning_rate(8192, 0.1, 256, "linear") == pytest.approx(3.2)
    assert schedules.scaled_learning_rate(8192, 0.1, 256, "sqrt") == pytest.approx(
        0.1 * math.sqrt(32))
    assert schedules.scaled_learning_rate(8192, 0.1, 256, "none") == pytest.approx(0.1)


def test_scaled_learning_rate_errors():
    with pytest.raises(ValueError, match="'cubic'"):
        schedules.scaled_learning_rate(8192, scaling="cubic")
    with pytest.raises(ValueError, match="global_batch_size.*-8"):
        schedules.scaled_learning_rate(-8)


# --------------------------------------------------------------------------
# Step decay (R4)
# --------------------------------------------------------------------------


def test_step_decay_imagenet_8k():
    sched = schedules.StepDecay(3.2, SPE_8K)
    checks = {0: 3.2}
    for i, epoch in enumerate((30, 60, 80)):
        boundary = _nearest(epoch * SPE_8K)
        checks[boundary - 1] = 3.2 * 0.1 ** i
        checks[boundary] = 3.2 * 0.1 ** (i + 1)
    checks[_nearest(90 * SPE_8K)] = 3.2e-3
    steps = sorted(checks)
    np.testing.assert_allclose(_values(sched, steps), [checks[s] for s in steps],
                               rtol=1e-6)
    assert sched.boundary_steps == (4692, 9384, 12511)


def test_step_decay_dense_matches_numpy():
    sched = schedules.StepDecay(1.0, 2.5, boundaries_epochs=(2, 4), factor=0.5)
    t = np.arange(15)
    expected = 1.0 * 0.5 ** ((t >= 5).astype(int) + (t >= 10).astype(int))
    np.testing.assert_allclose(_values(sched, t), expected, rtol=1e-7)


def test_step_decay_rejects_unsorted_boundaries():
    with pytest.raises(ValueError, match="60, 30"):
        schedules.StepDecay(1.0, 10, boundaries_epochs=(60, 30))


# --------------------------------------------------------------------------
# Cosine and constant
# --------------------------------------------------------------------------


def test_cosine_decay_matches_numpy():
    peak, final, spe, epochs = 2.0, 0.1, 7.5, 4
    sched = schedules.CosineDecay(peak, spe, epochs, final_lr=final)
    total = 30
    t = np.array([0, 1, 7, 15, 22, 29, 30, 31, 100])
    expected = final + 0.5 * (peak - final) * (1 + np.cos(np.pi * np.minimum(t, total) / total))
    np.testing.assert_allclose(_values(sched, t), expected, rtol=1e-6, atol=1e-7)


def test_cosine_decay_too_short():
    with pytest.raises(ValueError, match="total_epochs=0.01"):
        schedules.CosineDecay(1.0, 10, 0.01)


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
def test_polynomial_decay_matches_numpy(power):
    peak, final, spe = 2.0, 0.1, 7.5
    sched = schedules.PolynomialDecay(peak, spe, 4, power=power,
                                      final_lr=final, start_epochs=2)
    start, total = 15, 30  # epochs 2 and 4 at 7.5 steps an epoch
    t = np.array([0, 14, 15, 16, 22, 29, 30, 31, 100])
    done = np.clip(t - start, 0, total - start) / (total - start)
    expected = final + (peak - final) * (1 - done) ** power
    np.testing.assert_allclose(_values(sched, t), expected, rtol=1e-6,
                               atol=1e-7)


def test_polynomial_decay_checks_its_numbers():
    # A run shorter than the warmup (a test cut short) keeps the peak up to
    # where the decay would start.
    short = schedules.PolynomialDecay(1.0, 10, 0.5, start_epochs=4)
    np.testing.assert_allclose(_values(short, [0, 39, 40, 41]),
                               [1.0, 1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="power must be > 0, got 0"):
        schedules.PolynomialDecay(1.0, 10, 4, power=0)


def test_build_lars_reference_schedule():
    """The TF reference LARS schedule at kn = 16k (tensorflow/tpu
    lars_util.poly_rate_schedule): from 0 up to 25 in 5 epochs, then
    25 * (1 - (t - W) / (T - W))^2 to 0 at epoch 90."""
    spe = 1281167 / 16384
    sched = schedules.build_learning_rate_schedule(
        16384, spe, base_lr=25.0, base_batch_size=16384, warmup_epochs=5,
        decay="polynomial", decay_power=2.0, warmup_start_lr=0.0,
        total_epochs=90)
    w, total = _nearest(5 * spe), _nearest(90 * spe)
    t = np.array([0, w // 2, w, (w + total) // 2, total - 1, total])
    expected = np.where(t < w, 25.0 * t / w,
                        25.0 * (1 - (t - w) / (total - w)) ** 2)
    np.testing.assert_allclose(_values(sched, t), expected, rtol=1e-5,
                               atol=1e-6)


def test_constant_lr():
    np.testing.assert_allclose(_values(schedules.ConstantLR(0.7), [0, 5, 10**6]),
                               [0.7] * 3, rtol=1e-7)
    assert float(schedules.ConstantLR(0.7)(3)) == pytest.approx(0.7)


# --------------------------------------------------------------------------
# Warmup (R2, R3)
# --------------------------------------------------------------------------


def test_gradual_warmup_matches_numpy():
    start, peak, spe, factor = 0.1, 3.2, 4.0, 0.1
    after = schedules.StepDecay(peak, spe, boundaries_epochs=(5, 8), factor=factor)
    sched = schedules.GradualWarmup(after, start, warmup_epochs=2.5, steps_per_epoch=spe)
    w = 10
    t = np.arange(w + 30)
    decayed = peak * factor ** ((t >= 20).astype(int) + (t >= 32).astype(int))
    expected = np.where(t < w, start + (peak - start) * t / w, decayed)
    got = _values(sched, t)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.float32(got[0]) == np.float32(start)
    assert np.float32(got[w]) == np.float32(peak)
    np.testing.assert_allclose(np.diff(got[:w + 1]), (peak - start) / w, rtol=1e-5)


def test_gradual_warmup_zero_length_is_after():
    after = schedules.StepDecay(1.0, 1.0, boundaries_epochs=(3,))
    sched = schedules.GradualWarmup(after, 0.1, warmup_epochs=0, steps_per_epoch=1.0)
    np.testing.assert_allclose(_values(sched, range(6)), _values(after, range(6)))


def test_constant_warmup_jumps():
    start, peak = 0.1, 3.2
    after = schedules.ConstantLR(peak)
    sched = schedules.ConstantWarmup(after, start, warmup_epochs=2, steps_per_epoch=3.0)
    t = np.arange(12)
    np.testing.assert_allclose(_values(sched, t), np.where(t < 6, start, peak), rtol=1e-7)


def test_warmup_rejects_non_schedule():
    with pytest.raises(TypeError, match="3.2"):
        schedules.GradualWarmup(3.2, 0.1, 5, 10)


@pytest.mark.parametrize("step", [
    7, 7.0, tf.constant(7, tf.int32), tf.constant(7, tf.int64),
    tf.constant(7.0, tf.float32), keras.Variable(7, dtype="int64"),
])
def test_step_types(step):
    sched = schedules.GradualWarmup(schedules.ConstantLR(1.1), 0.1, 1.0, 10)
    lr = sched(step)
    assert lr.dtype == tf.float32
    assert float(lr) == pytest.approx(0.1 + 1.0 * 7 / 10)


def test_works_in_tf_function_and_optimizer():
    sched = schedules.build_learning_rate_schedule(8192, SPE_8K)
    fn = tf.function(sched)
    assert float(fn(tf.constant(0, tf.int64))) == pytest.approx(0.1)
    assert float(fn(tf.constant(782, tf.int64))) == pytest.approx(3.2)
    opt = keras.optimizers.SGD(learning_rate=sched, momentum=0.9)
    assert float(opt.learning_rate) == pytest.approx(0.1)


# --------------------------------------------------------------------------
# Serialisation
# --------------------------------------------------------------------------

STEPS = [0, 1, 100, 781, 782, 783, 4691, 4692, 9384, 12511, 14075, 20000]


def _all_schedules():
    step = schedules.StepDecay(3.2, SPE_8K)
    cosine = schedules.CosineDecay(3.2, SPE_8K, 90, final_lr=0.01)
    return [
        step, cosine, schedules.ConstantLR(3.2),
        schedules.PolynomialDecay(25.0, SPE_8K, 90, power=2.0, final_lr=0.01,
                                  start_epochs=5),
        schedules.GradualWarmup(step, 0.1, 5, SPE_8K),
        schedules.ConstantWarmup(cosine, 0.1, 5, SPE_8K),
    ]


@pytest.mark.parametrize("sched", _all_schedules(), ids=lambda s: type(s).__name__)
def test_config_round_trip(sched):
    clone = type(sched).from_config(sched.get_config())
    assert type(clone) is type(sched)
    assert clone.get_config() == sched.get_config()
    np.testing.assert_array_equal(_values(clone, STEPS), _values(sched, STEPS))


@pytest.mark.parametrize("sched", _all_schedules(), ids=lambda s: type(s).__name__)
def test_keras_serialize_round_trip(sched):
    config = keras.optimizers.schedules.serialize(sched)
    clone = keras.optimizers.schedules.deserialize(config)
    assert type(clone) is type(sched)
    np.testing.assert_array_equal(_values(clone, STEPS), _values(sched, STEPS))


def _schedule_classes():
    """Every LearningRateSchedule class that tf_lbsgd.schedules defines."""
    return [value for value in vars(schedules).values()
            if isinstance(value, type)
            and issubclass(value, keras.optimizers.schedules.LearningRateSchedule)
            and value.__module__ == schedules.__name__]


def test_every_public_schedule_is_registered_with_keras_and_gin():
    public = [c for c in _schedule_classes() if not c.__name__.startswith("_")]
    assert {c.__name__ for c in public} == {
        "StepDecay", "CosineDecay", "ConstantLR", "GradualWarmup",
        "ConstantWarmup", "PolynomialDecay"}
    for cls in public:
        name = cls.__name__
        assert keras.saving.get_registered_name(cls) == f"tf_lbsgd>{name}"
        assert keras.saving.get_registered_object(f"tf_lbsgd>{name}") is cls
        assert gin.get_configurable(f"schedules.{name}") is not None


def test_nested_warmups_round_trip_without_custom_objects():
    """A warmup of a warmup of a step decay, through Keras' serialisation."""
    inner = schedules.ConstantWarmup(schedules.StepDecay(3.2, SPE_8K), 0.4,
                                     10, SPE_8K)
    sched = schedules.GradualWarmup(inner, 0.1, 5, SPE_8K)
    config = keras.saving.serialize_keras_object(sched)
    assert config["config"]["after"]["config"]["after"]["registered_name"] == (
        "tf_lbsgd>StepDecay")
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone.after.after) is schedules.StepDecay
    assert clone.get_config() == sched.get_config()
    np.testing.assert_array_equal(_values(clone, STEPS), _values(sched, STEPS))


def test_optimizer_config_round_trip():
    sched = schedules.build_learning_rate_schedule(8192, SPE_8K)
    opt = keras.optimizers.SGD(learning_rate=sched, momentum=0.9)
    clone = keras.optimizers.SGD.from_config(opt.get_config())
    assert isinstance(clone._learning_rate, schedules.GradualWarmup)
    assert isinstance(clone._learning_rate.after, schedules.StepDecay)
    np.testing.assert_array_equal(_values(clone._learning_rate, STEPS),
                                  _values(sched, STEPS))


# --------------------------------------------------------------------------
# build_learning_rate_schedule
# --------------------------------------------------------------------------


def test_build_paper_imagenet_8k():
    sched = schedules.build_learning_rate_schedule(8192, SPE_8K)
    w = _nearest(5 * SPE_8K)
    got = _values(sched, np.arange(w + 1))
    assert got[0] == pytest.approx(0.1, rel=1e-6)
    assert got[w] == pytest.approx(3.2, rel=1e-6)
    np.testing.assert_allclose(np.diff(got), (3.2 - 0.1) / w, rtol=1e-3)
    epochs = [29.99, 30, 59.99, 60, 79.99, 80, 90]
    steps = [_nearest(e * SPE_8K) for e in epochs]
    np.testing.assert_allclose(_values(sched, steps),
                               [3.2, 0.32, 0.32, 0.032, 0.032, 0.0032, 0.0032], rtol=1e-6)


@pytest.mark.parametrize("warmup", ["gradual", "constant"])
def test_build_below_reference_batch_does_not_warm_down(warmup):
    """kn = 32 < 256: the scaled rate 0.1 * 32 / 256 applies from step 0,
    not a ramp down from the reference 0.1."""
    sched = schedules.build_learning_rate_schedule(32, 100, warmup=warmup,
                                                   decay="constant")
    np.testing.assert_allclose(_values(sched, [0, 50, 499, 500, 600]),
                               [0.0125] * 5, rtol=1e-6)


@pytest.mark.parametrize("kwargs,expected_type", [
    ({}, schedules.GradualWarmup),
    ({"warmup": "constant"}, schedules.ConstantWarmup),
    ({"warmup": "none"}, schedules.StepDecay),
    ({"warmup": "none", "decay": "cosine"}, schedules.CosineDecay),
    ({"warmup": "none", "decay": "constant"}, schedules.ConstantLR),
    ({"warmup": "none", "decay": "polynomial"}, schedules.PolynomialDecay),
])
def test_build_types(kwargs, expected_type):
    sched = schedules.build_learning_rate_schedule(1024, 100, **kwargs)
    assert type(sched) is expected_type


def test_build_no_warmup_and_scalings():
    sched = schedules.build_learning_rate_schedule(8192, SPE_8K, warmup="none")
    assert float(sched(0)) == pytest.approx(3.2)
    sched = schedules.build_learning_rate_schedule(8192, SPE_8K, warmup="none",
                                                   scaling="sqrt")
    assert float(sched(0)) == pytest.approx(0.1 * math.sqrt(32), rel=1e-6)


def test_build_through_gin():
    default = schedules.build_learning_rate_schedule(8192, SPE_8K)
    gin.parse_config(["schedules.build_learning_rate_schedule.warmup = 'constant'"])
    sched = schedules.build_learning_rate_schedule(8192, SPE_8K)
    assert isinstance(sched, schedules.ConstantWarmup)
    assert float(sched(400)) == pytest.approx(0.1)
    assert float(default(400)) > 1.0


def test_gin_registered_classes():
    gin.parse_config([
        "schedules.StepDecay.peak_lr = 0.4",
        "schedules.StepDecay.steps_per_epoch = 10",
        "schedules.StepDecay.boundaries_epochs = (1,)",
    ])
    sched = gin.get_configurable("schedules.StepDecay")()
    assert type(sched) is schedules.StepDecay
    np.testing.assert_allclose(_values(sched, [9, 10]), [0.4, 0.04], rtol=1e-6)
    for name in ("CosineDecay", "ConstantLR", "GradualWarmup", "ConstantWarmup"):
        assert gin.get_configurable(f"schedules.{name}") is not None


@pytest.mark.parametrize("kwargs,bad", [
    ({"warmup": "linear"}, "'linear'"),
    ({"decay": "poly"}, "'poly'"),
    ({"scaling": "quadratic"}, "'quadratic'"),
])
def test_build_bad_names(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        schedules.build_learning_rate_schedule(8192, SPE_8K, **kwargs)
