"""A run's recipe as a session of TensorBoard's HParams dashboard.

The chief writes one events file into model_dir itself (the run root): the
experiment's columns (`hp.hparams_config`: the recipe's settings and the
metrics) and this run's values (`hp.hparams`). TensorBoard over a parent
directory (a reproduction's runs_dir, one model_dir per run) then lists
each model_dir as a session, its metrics read from the model_dir's
train/ and validation/ runs.

TensorBoard keeps the first summary of a tag that it reads in a run (from
the oldest events file), so a second session written into the same
model_dir would be ignored, silently. A resumed run writes none: the
session keeps the values the run started with, and a setting changed since
is logged.
"""

import functools
import inspect
import numbers
import os

from absl import logging
import gin
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import metadata
import tensorflow as tf

from tf_lbsgd import schedules
from tf_lbsgd.analysis.event_files import EVENT_FILE_PATTERN
from tf_lbsgd.analysis.run_outputs import TRAIN_SUMMARY_DIR
from tf_lbsgd.analysis.run_outputs import VALIDATION_SUMMARY_DIR

# Every session declares the same columns (TensorBoard takes them from one
# model_dir it picks); a run leaves out what does not apply to it. The
# dashboard orders them by name and shows the first five at first: the
# batch sizes, epochs and base rate.
HPARAMS = {
    "batch/kn": "global batch size (R9)",
    "batch/k": "replicas (workers)",
    "batch/n": "per-replica batch size",
    "epochs": "training length in epochs",
    "lr/base": "learning rate per lr/base_batch images (R1)",
    "lr/base_batch": "reference batch of lr/base (256 in the paper)",
    "lr/scaling": "learning-rate scaling rule: linear (R1), sqrt or none",
    "lr/peak": "scaled learning rate reached after warmup",
    "lr/warmup": "gradual (R2), constant (R3) or none",
    "lr/warmup_epochs": "warmup length in epochs",
    "lr/decay": "schedule after warmup: step (R4), cosine, polynomial, "
                "constant or a class name",
    "lr/decay_power": "exponent of the polynomial decay",
    "lr/decay_epochs": "step-decay boundaries in epochs",
    "lr/decay_factor": "step-decay multiplier",
    "optimizer": "optimizer class",
    "optimizer/momentum": "momentum",
    "optimizer/weight_decay": "L2 weight decay",
    "optimizer/trust_coefficient": "LARS' trust coefficient",
    "optimizer/ema_momentum": "momentum of the weights' moving average, "
                              "if the evaluations use it",
    "precision": "float32, mixed_float16 or mixed_bfloat16",
    "seed": "seed of the weights, shuffle and augmentation",
}
# (group, tag): the group is the summary dir under model_dir.
METRICS = ((TRAIN_SUMMARY_DIR, "loss"), (TRAIN_SUMMARY_DIR, "top1_error"),
           (VALIDATION_SUMMARY_DIR, "loss"),
           (VALIDATION_SUMMARY_DIR, "top1_error"),
           (VALIDATION_SUMMARY_DIR, "top5_error"))
_DATASET_TYPES = {TRAIN_SUMMARY_DIR: hp.Metric.TRAINING,
                  VALIDATION_SUMMARY_DIR: hp.Metric.VALIDATION}
_WARMUP_KINDS = {schedules.GradualWarmup: "gradual",
                 schedules.ConstantWarmup: "constant"}
_DECAY_KINDS = {schedules.StepDecay: "step", schedules.CosineDecay: "cosine",
                schedules.ConstantLR: "constant",
                schedules.PolynomialDecay: "polynomial"}


def builder_arguments(schedule_fn):
    """The settings `schedule_fn` builds the paper's schedule with.

    Args:
        schedule_fn: `schedules.build_learning_rate_schedule`, or a
            `functools.partial` of it (as `api.Recipe.schedule_fn`), or any
            other builder.

    Returns:
        {argument: value} as the call gets them (the function's defaults,
        over them gin's bindings, over those the partial's keywords); {}
        for another builder, whose settings are unknown.
    """
    keywords = {}
    while isinstance(schedule_fn, functools.partial):
        keywords = {**schedule_fn.keywords, **keywords}
        schedule_fn = schedule_fn.func
    if schedule_fn is not schedules.build_learning_rate_schedule:
        return {}
    defaults = {name: parameter.default for name, parameter
                in inspect.signature(schedule_fn).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    return {**defaults, **gin.get_bindings(schedule_fn), **keywords}


def _schedule_hparams(schedule):
    """What the schedule objects say: warmup, peak rate and decay."""
    values = {"lr/warmup": "none", "lr/warmup_epochs": 0.0}
    warmup = _WARMUP_KINDS.get(type(schedule))
    if warmup:
        values.update({"lr/warmup": warmup,
                       "lr/warmup_epochs": float(schedule.warmup_epochs)})
        schedule = schedule.after
    values["lr/decay"] = _DECAY_KINDS.get(type(schedule),
                                          type(schedule).__name__)
    if isinstance(getattr(schedule, "peak_lr", None), numbers.Real):
        values["lr/peak"] = float(schedule.peak_lr)
    if isinstance(schedule, schedules.StepDecay):
        values["lr/decay_epochs"] = ",".join(
            f"{epoch:g}" for epoch in schedule.boundaries_epochs)
        values["lr/decay_factor"] = float(schedule.factor)
    if isinstance(schedule, schedules.PolynomialDecay):
        values["lr/decay_power"] = float(schedule.power)
    return values


def _optimizer_hparams(optimizer):
    """Class, momentum and weight decay (of the optimizer a loss-scaling
    wrapper holds)."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    values = {"optimizer": type(optimizer).__name__}
    momentum = getattr(optimizer, "momentum", None)
    decay = getattr(optimizer, "l2_weight_decay",
                    getattr(optimizer, "weight_decay", None))
    ema = (getattr(optimizer, "ema_momentum", None)
           if getattr(optimizer, "use_ema", False) else None)
    for name, value in (("optimizer/momentum", momentum),
                        ("optimizer/weight_decay", decay),
                        ("optimizer/trust_coefficient",
                         getattr(optimizer, "trust_coefficient", None)),
                        ("optimizer/ema_momentum", ema)):
        if isinstance(value, numbers.Real):
            values[name] = float(value)
    return values


def recipe_hparams(schedule, optimizer, *, global_batch_size, num_replicas,
                   epochs, precision, seed, schedule_fn=None):
    """The HParams of a run, each a str, float, int or bool.

    Args:
        schedule: the learning-rate schedule the optimizer follows
            (`schedules` objects say their warmup, peak rate and decay;
            another schedule only its class name).
        optimizer: the optimizer (its inner one if it scales the loss).
        global_batch_size: kn.
        num_replicas: k.
        epochs: the training length in epochs.
        precision: the precision policy's name.
        seed: the run's seed.
        schedule_fn: the builder of `schedule`, for its base_lr,
            base_batch_size and scaling (see `builder_arguments`).

    Returns:
        {name: value} with names from `HPARAMS`.
    """
    built_with = builder_arguments(schedule_fn)
    values = {
        "batch/kn": int(global_batch_size), "batch/k": int(num_replicas),
        "batch/n": int(global_batch_size) // int(num_replicas),
        "epochs": float(epochs), "precision": str(precision),
        "seed": int(seed),
        **{name: kind(built_with[argument]) for name, argument, kind in (
            ("lr/base", "base_lr", float),
            ("lr/base_batch", "base_batch_size", int),
            ("lr/scaling", "scaling", str)) if argument in built_with},
        **_schedule_hparams(schedule), **_optimizer_hparams(optimizer),
    }
    return {name: values[name] for name in HPARAMS if name in values}


def _session_values(session_start_info):
    return {name: getattr(value, value.WhichOneof("kind"))
            for name, value in session_start_info.hparams.items()}


def read_session(model_dir):
    """The HParams of the session in model_dir's own events files, or None.

    A file cut short (a run killed while writing) is read up to there.
    """
    pattern = os.path.join(model_dir, EVENT_FILE_PATTERN)
    for path in sorted(tf.io.gfile.glob(pattern)):
        try:
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    if value.tag == metadata.SESSION_START_INFO_TAG:
                        return _session_values(
                            metadata.parse_session_start_info_plugin_data(
                                value.metadata.plugin_data.content))
        except tf.errors.DataLossError:
            continue
    return None


def write_session(model_dir, values):
    """Writes the HParams session of the run in model_dir, once.

    A model_dir that has its session already (a resumed run) keeps it; a
    setting changed since is logged, and stays as the session recorded it.

    Args:
        model_dir: the run's directory.
        values: {name: value} (`recipe_hparams`).

    Returns:
        True if the session was written now, False if it existed.

    Raises:
        ValueError: naming a value whose name is not in `HPARAMS`.
    """
    unknown = sorted(set(values) - set(HPARAMS))
    if unknown:
        raise ValueError(f"HParams {unknown} are not among {list(HPARAMS)}")
    recorded = read_session(model_dir)
    if recorded is not None:
        changed = {name: (recorded.get(name), value)
                   for name, value in values.items()
                   if recorded.get(name) != value}
        if changed:
            logging.warning("%s keeps the HParams it started with; changed "
                            "since (recorded, now): %s", model_dir, changed)
        return False
    writer = tf.summary.create_file_writer(model_dir)
    with writer.as_default():
        hp.hparams_config(
            hparams=[hp.HParam(name, description=description)
                     for name, description in HPARAMS.items()],
            metrics=[hp.Metric(tag, group=group, display_name=f"{group}/{tag}",
                               dataset_type=_DATASET_TYPES[group])
                     for group, tag in METRICS])
        hp.hparams(values)
    writer.close()
    return True
