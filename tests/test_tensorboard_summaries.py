"""What a run leaves for TensorBoard (issue 18): the same tags in train/ and
validation/, the HParams session in model_dir itself, the profile of chosen
steps, and the `profile_steps` setting's checks.

One short run (8 steps of a linear model on 2 replicas) serves every check
of its model_dir; the HParams of the API's runs (a partial of the schedule
builder, a resumed run) are checked in test_api.
"""

import functools
import glob
import os

import gin
import keras
import numpy as np
import pytest
from tensorboard.plugins.hparams import metadata
import tensorflow as tf

import tf_lbsgd
from tf_lbsgd import distribute
from tf_lbsgd import hparams
from tf_lbsgd import profiling
from tf_lbsgd import schedules
from tf_lbsgd import train_lib
from tf_lbsgd.analysis import event_files
from tf_lbsgd.data import adapters

K, KN, CLASSES, DIM = 2, 16, 6, 4
BASE_LR, SEED = 0.2, 3
STEPS_PER_LOOP = 2  # 64 examples / kn = 4 steps per epoch; 2 epochs.
TRAIN_TAGS = {"loss", "top1_error", "learning_rate", "examples_per_second",
              "loss_scale", "skipped_steps", "skipped_images"}
VALIDATION_TAGS = {"loss", "top1_error", "top5_error", "median5_top1_error",
                   "examples"}


def _arrays(count, seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(count, DIM)).astype("f4"),
            rng.integers(0, CLASSES, size=count).astype("i4"))


def _model_fn(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape),
                             keras.layers.Dense(num_classes)])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """8 steps, evaluated at steps 4 and 8; the profile opens before step 3
    and is still open when training ends (last step 100)."""
    model_dir = str(tmp_path_factory.mktemp("summaries") / "run")
    schedule_fn = functools.partial(
        schedules.build_learning_rate_schedule, base_lr=BASE_LR,
        warmup_epochs=1, decay_epochs=(1.5,), decay_factor=0.1)
    result = train_lib.train_model(
        model_dir, adapters.from_arrays(_arrays(64, 0), _arrays(24, 1), CLASSES),
        _model_fn, distribute.logical_cpu_strategy(K), global_batch_size=KN,
        per_replica_batch_size=None,
        epochs=2, seed=SEED, steps_per_loop=STEPS_PER_LOOP, export=False,
        schedule_fn=schedule_fn, profile_steps=(3, 100))
    return model_dir, result.metrics


def _events(directory):
    for path in sorted(glob.glob(os.path.join(
            directory, event_files.EVENT_FILE_PATTERN))):
        yield from event_files.read_events(path)


def _scalars(directory):
    """{tag: {step: value}} of the scalars in `directory`'s event files."""
    scalars = {}
    for event in _events(directory):
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "scalars":
                scalars.setdefault(value.tag, {})[event.step] = (
                    event_files.scalar_value(value))
    return scalars


def _tags(directory):
    return {value.tag for event in _events(directory)
            for value in event.summary.value}


def test_train_and_validation_share_their_tags(run):
    model_dir, metrics = run
    train = _scalars(os.path.join(model_dir, "train"))
    validation = _scalars(os.path.join(model_dir, "validation"))
    assert TRAIN_TAGS <= set(train), sorted(train)
    assert set(validation) == VALIDATION_TAGS
    assert not any("/" in tag for tag in set(train) | set(validation))
    assert "gin/operative_config" in _tags(os.path.join(model_dir, "train"))
    assert not os.path.exists(os.path.join(model_dir, "eval"))
    assert sorted(train["loss"]) == [2, 4, 6, 8]  # Once per loop.
    assert sorted(validation["top1_error"]) == [4, 8]  # Once per epoch.
    for tag in ("loss", "top1_error", "top5_error", "examples"):
        assert validation[tag][8] == pytest.approx(metrics["eval"][tag]), tag
    assert validation["examples"][8] == 24
    # The rate of the next step: the peak (warmup starts there as kn < 256)
    # until the decay at 1.5 epochs, iteration 6.
    peak = BASE_LR * KN / 256
    assert train["learning_rate"][4] == pytest.approx(peak)
    assert train["learning_rate"][6] == pytest.approx(peak * 0.1)


def _hparams_summaries(model_dir):
    """{tag: plugin data content} of the hparams plugin's summaries in
    model_dir's own event files."""
    return {value.tag: value.metadata.plugin_data.content
            for event in _events(model_dir) for value in event.summary.value
            if value.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME}


def test_the_run_root_holds_its_hparams_session(run):
    model_dir, _ = run
    assert len(glob.glob(os.path.join(
        model_dir, event_files.EVENT_FILE_PATTERN))) == 1
    summaries = _hparams_summaries(model_dir)
    session = metadata.parse_session_start_info_plugin_data(
        summaries[metadata.SESSION_START_INFO_TAG])
    values = {name: getattr(value, value.WhichOneof("kind"))
              for name, value in session.hparams.items()}
    assert values == {
        "batch/kn": KN, "batch/k": K, "batch/n": KN // K, "epochs": 2.0,
        "lr/base": BASE_LR, "lr/base_batch": 256, "lr/scaling": "linear",
        "lr/peak": pytest.approx(BASE_LR * KN / 256), "lr/warmup": "gradual",
        "lr/warmup_epochs": 1.0, "lr/decay": "step", "lr/decay_epochs": "1.5",
        "lr/decay_factor": pytest.approx(0.1), "optimizer": "MomentumSGD",
        "optimizer/momentum": pytest.approx(0.9),
        "optimizer/weight_decay": pytest.approx(1e-4),
        "precision": "float32", "seed": SEED}
    experiment = metadata.parse_experiment_plugin_data(
        summaries[metadata.EXPERIMENT_TAG])
    assert [(m.name.group, m.name.tag) for m in experiment.metric_infos] == [
        ("train", "loss"), ("train", "top1_error"), ("validation", "loss"),
        ("validation", "top1_error"), ("validation", "top5_error")]
    assert [info.name for info in experiment.hparam_infos] == list(
        hparams.HPARAMS)
    assert hparams.read_session(model_dir) == values


def test_a_second_write_keeps_the_session(run, caplog):
    model_dir, _ = run
    first = hparams.read_session(model_dir)
    assert not hparams.write_session(model_dir, dict(first, epochs=4.0))
    assert "'epochs': (2.0, 4.0)" in caplog.text  # The change is logged...
    assert hparams.read_session(model_dir) == first  # ...and not written.
    assert len(glob.glob(os.path.join(
        model_dir, event_files.EVENT_FILE_PATTERN))) == 1


def test_builder_arguments_follow_gin_then_the_partial():
    gin.bind_parameter("schedules.build_learning_rate_schedule.base_lr", 0.3)
    gin.bind_parameter("schedules.build_learning_rate_schedule.scaling",
                       "sqrt")
    builder = schedules.build_learning_rate_schedule
    arguments = hparams.builder_arguments(builder)
    assert (arguments["base_lr"], arguments["scaling"],
            arguments["base_batch_size"]) == (0.3, "sqrt", 256)
    assert hparams.builder_arguments(
        functools.partial(builder, base_lr=0.5))["base_lr"] == 0.5
    assert hparams.builder_arguments(
        lambda **kwargs: schedules.ConstantLR(0.1)) == {}


def _profiles(logdir):
    return glob.glob(os.path.join(logdir, "plugins", "profile", "*",
                                  "*.xplane.pb"))


def test_a_trace_open_when_training_ends_is_written(run):
    model_dir, _ = run
    (profile,) = _profiles(os.path.join(model_dir, "train"))
    assert os.path.getsize(profile) > 0
    with pytest.raises(tf.errors.UnavailableError):  # None left running.
        tf.profiler.experimental.stop()


def test_the_profiler_traces_the_loops_of_the_range(tmp_path):
    step = tf.Variable(0, dtype=tf.int64)
    profiler = profiling.StepProfiler(str(tmp_path), (3, 4), 2, step)
    profiler.start_if_due()  # The loop of steps 1-2: not yet.
    assert not profiler.tracing
    step.assign(2)
    profiler({})  # Before the loop of steps 3-4.
    assert profiler.tracing
    step.assign(4)
    profiler({})  # After it: stopped and written.
    assert not profiler.tracing and len(_profiles(str(tmp_path))) == 1
    step.assign(6)
    profiler({})
    profiler.close()
    assert not profiler.tracing and len(_profiles(str(tmp_path))) == 1


@pytest.mark.parametrize("steps", [(5, 2), (0, 3), (1.0, 2), (True, 2),
                                   (1, 2, 3), "3,4", 5])
def test_bad_profile_steps_are_refused_naming_the_setting(steps, tmp_path):
    gin.bind_parameter("train_lib.run.profile_steps", steps)
    with pytest.raises(ValueError) as error:
        train_lib.run(str(tmp_path / "run"), data=None, model_fn=None,
                      epochs=1)  # Refused before the data is loaded.
    # gin adds a line naming the configurable.
    assert str(error.value).splitlines()[0] == (
        f"train_lib.run.profile_steps must be None (no profile) or a pair "
        f"of training steps (first, last) with 1 <= first <= last, such as "
        f"(10, 20), got {steps!r}")
    assert not (tmp_path / "run").exists()


def test_train_model_refuses_bad_profile_steps_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"train_lib\.run\.profile_steps "
                       r"must be .*, got \[2, 1\]"):
        train_lib.train_model(
            str(tmp_path / "run"), adapters.from_arrays(_arrays(8, 0), num_classes=CLASSES),
            _model_fn, tf.distribute.get_strategy(), mode="train",
            per_replica_batch_size=8, epochs=1, profile_steps=[2, 1])
    assert not (tmp_path / "run").exists()


def test_the_api_profiles_the_recipe_steps(tmp_path):
    model_dir = str(tmp_path / "api")
    tf_lbsgd.train(_model_fn, _arrays(16, 0), model_dir, num_classes=CLASSES,
                   recipe=tf_lbsgd.Recipe(
                       epochs=1, global_batch_size=8, steps_per_loop=1,
                       export=False, profile_steps=(2, 2)))
    (profile,) = _profiles(os.path.join(model_dir, "train"))
    assert os.path.getsize(profile) > 0
    with pytest.raises(ValueError, match=r"^Recipe\.profile_steps must be "
                       r".*, got \(0, 1\)"):
        tf_lbsgd.train(_model_fn, _arrays(16, 0), str(tmp_path / "bad"),
                       num_classes=CLASSES, recipe=tf_lbsgd.Recipe(
                           epochs=1, global_batch_size=8,
                           profile_steps=(0, 1)))
    assert not (tmp_path / "bad").exists()
