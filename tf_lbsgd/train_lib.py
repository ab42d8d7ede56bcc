"""One run of the recipe: strategy, data, model and optimizer, then orbit.

`train_model` is the run itself, for any data source and Keras model (the
Python API, `api.train`, is a user of it); `run` is the one
`@gin.configurable` entry point of the CLI (bindings such as
`train_lib.run.epochs = 2`), a thin user of it too. Everything is created
inside `strategy.scope()`.
"""

import contextlib
import dataclasses
import gc
import os
import time
from typing import Optional

from absl import logging
import gin
import keras
import orbit
import tensorflow as tf

from tf_lbsgd import allreduce
from tf_lbsgd import checkpoints
from tf_lbsgd import checks
from tf_lbsgd import cpu_threads
from tf_lbsgd import distribute
from tf_lbsgd import ema
from tf_lbsgd import export as export_lib
from tf_lbsgd import hparams
from tf_lbsgd import losses
from tf_lbsgd import optimizers
from tf_lbsgd import outputs
from tf_lbsgd import precision as precision_lib
from tf_lbsgd import preemption
from tf_lbsgd import profiling
from tf_lbsgd import progress
from tf_lbsgd import schedules
from tf_lbsgd import warm_start
from tf_lbsgd import worker_packing
from tf_lbsgd import xla_choice
from tf_lbsgd.analysis.run_outputs import TRAIN_SUMMARY_DIR
from tf_lbsgd.analysis.run_outputs import VALIDATION_SUMMARY_DIR
from tf_lbsgd.data import source
from tf_lbsgd.models import adapt
from tf_lbsgd.models import layers
from tf_lbsgd.trainer import Evaluator
from tf_lbsgd.trainer import Trainer

MODES = ("train", "eval", "train_and_eval", "export")
EXPORT_DIR = "export"  # model_dir/export/<step>/: the SavedModel.


def resolve_batch_sizes(num_replicas, per_replica_batch_size,
                        global_batch_size, where="train_lib.run."):
    """Returns (n, kn): per-replica and global batch (kn = k * n).

    Either size may be given; if both are, they must agree.

    Raises:
        ValueError: naming the setting and its value when a size is not a
            positive integer (0, '32'), kn is not divisible by k or the two
            sizes disagree.
    """
    if global_batch_size is None:
        checks.positive_int(f"{where}per_replica_batch_size",
                              per_replica_batch_size)
        return per_replica_batch_size, per_replica_batch_size * num_replicas
    checks.positive_int(f"{where}global_batch_size", global_batch_size)
    n = source.check_divisible(global_batch_size, num_replicas)
    if per_replica_batch_size not in (None, n):
        raise ValueError(
            f"global batch {global_batch_size} over {num_replicas} replicas is "
            f"{n} per replica, but per_replica_batch_size is "
            f"{per_replica_batch_size!r}")
    return n, global_batch_size


class _Run:
    """The objects of one run, built under the strategy's scope."""

    def __init__(self, strategy, data, model, global_batch, epochs, seed,
                 precision_name, jit_compile, schedule_fn, optimizer_fn):
        self.strategy = strategy
        self.data = data
        self.steps_per_epoch = data.num_train / global_batch
        self.total_steps = schedules.epochs_to_steps(epochs,
                                                     self.steps_per_epoch)
        keras.utils.set_random_seed(seed)  # Same initial weights every run.
        with strategy.scope():
            with precision_lib.dtype_policy(precision_name), \
                    layers.built_for_xla(jit_compile):
                self.model, self.num_classes = adapt.build_in_scope(
                    model, strategy, data.image_shape, data.num_classes)
            self.schedule = schedule_fn(
                global_batch_size=global_batch,
                steps_per_epoch=self.steps_per_epoch, total_epochs=epochs)
            self.optimizer = optimizer_fn(learning_rate=self.schedule,
                                          aggregate_gradients=False)
            if precision_name == "mixed_float16":
                self.optimizer = precision_lib.with_loss_scaling(self.optimizer)
            self.optimizer.build(self.model.trainable_variables)
            self.ema_weights = (ema.EmaWeights(self.model, self.optimizer)
                                if ema.uses_ema(self.optimizer) else None)
            self.global_step = orbit.utils.create_global_step()
            self.skipped_steps = tf.Variable(0, dtype=tf.int64,
                                             trainable=False,
                                             name="skipped_steps")
            self.train_seconds = tf.Variable(0.0, dtype=tf.float64,
                                             trainable=False,
                                             name="train_seconds")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer,
            global_step=self.global_step, train_seconds=self.train_seconds,
            skipped_steps=self.skipped_steps)


def _datasets(run, n, seed, start_step):
    train = run.strategy.distribute_datasets_from_function(
        lambda ctx: run.data.train_dataset_fn(ctx, n, seed, start_step))
    evaluation = None
    if run.data.eval_dataset_fn is not None:
        evaluation = run.strategy.distribute_datasets_from_function(
            lambda ctx: run.data.eval_dataset_fn(ctx, n))
    return train, evaluation


def _eval_boundaries(start, total, every_epochs, steps_per_epoch,
                     at_epochs=()):
    """Steps at which to pause training for an evaluation: every
    `every_epochs` epochs (rounded per boundary, so a fractional
    steps_per_epoch does not drift), at each of `at_epochs`, and at the end.
    Steps at or before `start` (done already) are dropped."""
    epochs = list(at_epochs)
    if every_epochs:
        boundary = 1
        while boundary * every_epochs * steps_per_epoch < total:
            epochs.append(boundary * every_epochs)
            boundary += 1
    steps = {schedules.epochs_to_steps(e, steps_per_epoch) for e in epochs}
    return sorted(s for s in steps if start < s < total) + [total]


def _metrics(run, global_batch, start_step, seconds_before, evaluator,
             earlier):
    """The metrics.json of this run: throughput of the steps trained now,
    the latest evaluation with the whole history (`earlier`, the earlier
    run's metrics.json, where nothing was trained or evaluated now)."""
    step = int(run.global_step.numpy())
    steps_done = step - start_step
    seconds = float(run.train_seconds.numpy()) - seconds_before
    metrics = {
        "skipped_images": source.num_skipped_images(run.data),
        "global_step": step,
        "epochs": step / run.steps_per_epoch,
        "global_batch_size": global_batch,
        "num_replicas": run.strategy.num_replicas_in_sync,
        "train_wall_time_s": float(run.train_seconds.numpy()),
        "skipped_steps": int(run.skipped_steps.numpy()),
        "loss_scale": precision_lib.loss_scale(run.optimizer),
        "examples_per_second": steps_done * global_batch / seconds
        if steps_done and seconds > 0 else None,
        "xla": run.xla,
        "cpu_threads": cpu_threads.chosen(),
        "workers": run.packing,
    }
    if not steps_done:  # Nothing trained now: keep the earlier throughput.
        metrics["examples_per_second"] = earlier.get("examples_per_second")
    result = evaluator.last_output if evaluator is not None else None
    if result:
        metrics["eval"] = {
            "top1_accuracy": 1.0 - result["top1_error"],
            # top1_error, top5_error, ...: each of the evaluator's top_k.
            **{key: value for key, value in result.items()
               if key.startswith("top") and key.endswith("_error")},
            "loss": result["loss"],
            "examples": result["examples"],
            "median5_top1_error": result["median5_top1_error"],
            "top1_error_history": evaluator.history,
            "evaluated_steps": evaluator.steps,
        }
    elif earlier.get("eval"):  # None now: keep the last (and its history).
        metrics["eval"] = earlier["eval"]
    return metrics


def _train(controller, run, stops, eval_each, eval_first=False):
    """Trains to each stop, evaluating there if asked (and first if
    `eval_first`: the evaluation of the current step that a stop left to do).

    A stop (`preemption.Preempted`: SIGTERM or Ctrl-C on any worker) is
    raised after a training loop, and the checkpoint of the current step is
    saved on every worker before it propagates (with `eval_pending` if the
    loop ended where an evaluation was due); or between evaluation batches,
    where that checkpoint is saved already (just before the evaluation, or
    restored from).
    """
    if eval_first:
        controller.evaluate(steps=-1)
    for stop in stops:
        if stop <= int(run.global_step.numpy()):
            continue
        start = time.time()
        try:
            controller.train(steps=stop, checkpoint_at_completion=False)
        except preemption.Preempted as error:
            run.train_seconds.assign_add(time.time() - start)
            controller.save_checkpoint()
            error.eval_pending = (eval_each
                                  and int(run.global_step.numpy()) == stop)
            raise
        run.train_seconds.assign_add(time.time() - start)
        controller.save_checkpoint()
        if eval_each:
            controller.evaluate(steps=-1)


def _task_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(getattr(resolver, "task_id", None) or 0)


@dataclasses.dataclass
class TrainResult:
    """What a run returns.

    Attributes:
        model: the trained Keras model (its variables mirrored by the run's
            strategy; `model.predict` and `model.save` work on it).
        metrics: the dict also written to model_dir/metrics.json.
        model_dir: the run's directory.
        export_path: the SavedModel written by this run, or None.
    """

    model: keras.Model
    metrics: dict
    model_dir: str
    export_path: Optional[str] = None


def _check_mode_name(mode):
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; expected one of {MODES}")


def _check_mode(mode, data):
    _check_mode_name(mode)
    if mode in ("eval", "train_and_eval") and data.eval_dataset_fn is None:
        raise ValueError(f"mode={mode!r} evaluates, but data set "
                         f"{data.name!r} has no evaluation examples; pass "
                         f"them, or use mode='train'")


def _export(run_, statistics, model_dir, chief):
    """Writes model_dir/export/<step>/ (every worker takes part, the chief
    writes); returns its path. With the optimizer's moving average of the
    weights, the export (and the model the run returns) holds it."""
    statistics.sync()  # The BN statistics a checkpoint saves.
    if run_.ema_weights is not None:
        run_.ema_weights.keep_in()
    return export_lib.export_saved_model(
        run_.model, os.path.join(model_dir, EXPORT_DIR),
        step=int(run_.global_step.numpy()), write=chief)


_collect_after_run = [True]


@contextlib.contextmanager
def exit_follows_run():
    """Within it, `train_model` leaves its input pipelines uncollected.

    For a process that exits as soon as the run returns (the CLI): the
    destructor of a tf.data iterator waits for its threads, which held a
    finished quick check 40-110 s before its summary in 2 of 3 runs here.
    """
    _collect_after_run.append(False)
    try:
        yield
    finally:
        _collect_after_run.pop()


def train_model(*args, **kwargs):
    """Trains, evaluates or exports a model: see `_train_model`'s Args.

    The run's input pipelines sit in reference cycles (tf.function, orbit,
    tf.distribute iterators): a collection after each run frees them and
    their threads, 18 a run that a long process (the test suite, a
    notebook) would otherwise keep, slowing all later work (not within
    `exit_follows_run`).
    """
    try:
        with progress.orbit_prints_to_log():
            return _train_model(*args, **kwargs)
    finally:
        if _collect_after_run[-1]:
            gc.collect()


def _train_model(model_dir, data, model, strategy=None, mode="train_and_eval",
                per_replica_batch_size=32, global_batch_size=None,
                epochs=None, seed=0, steps_per_loop=50, eval_every_epochs=1.0,
                eval_at_epochs=(), checkpoint_every_steps=500,
                keep_checkpoints=3, precision="float32", jit_compile=False,
                schedule_fn=None, optimizer_fn=None, loss_fn=None,
                eval_top_k=(1, 5), gradient_allreduce=None, init_checkpoint=None,
                init_skip_classifier=False, export=True, profile_steps=None,
                where="train_lib.run."):
    """Trains, evaluates or exports a model with the large-minibatch recipe.

    Args:
        model_dir: where checkpoints, events, the operative config,
            metrics.json and the export go. Re-running resumes from its last
            checkpoint.
        data: a `source.DataSource` (`adapters.from_arrays`,
            `adapters.from_dataset`, `fashion_mnist`, `imagenet`, ...).
        model: a `keras.Model` or a callable(input_shape=, num_classes=)
            returning one (`adapt.build_in_scope`).
        strategy: the `tf.distribute.Strategy`; None for
            `distribute.build_strategy()`. One of packed workers
            (`worker_packing`) runs k workers of n on fewer replicas: each
            replica takes its workers' batches and the model's
            `WorkerBatchNorm` layers normalise per worker.
        mode: `train`, `eval`, `train_and_eval` or `export`.
        per_replica_batch_size: n, examples per worker (R9).
        global_batch_size: kn; if given, n is derived from it.
        epochs: training length in epochs.
        seed: seed of the initial weights, the per-epoch shuffle (R12) and
            the augmentation.
        steps_per_loop: steps per `tf.function` call (one host sync each).
        eval_every_epochs: evaluate every this many epochs (0: only at end).
        eval_at_epochs: also evaluate at these epochs (e.g. densely near the
            end, for the median of the final evaluations, R14).
        checkpoint_every_steps: checkpoint interval in steps.
        keep_checkpoints: how many of the latest checkpoints to keep.
        precision: `float32`, `mixed_float16` (with dynamic loss scaling,
            `precision.with_loss_scaling`) or `mixed_bfloat16`.
        jit_compile: compile the forward and backward pass with XLA (the
            model is built under `layers.built_for_xla(jit_compile)`):
            True, False, or 'auto' for what was measured fastest on this
            kind of processor (`xla_choice.choose_jit_compile`); the choice
            and why are in metrics.json's `xla`.
        schedule_fn: callable(global_batch_size=, steps_per_epoch=,
            total_epochs=) returning the learning-rate schedule; None for
            `schedules.build_learning_rate_schedule` (R1-R4).
        optimizer_fn: callable(learning_rate=, aggregate_gradients=)
            returning the optimizer; None for `optimizers.MomentumSGD`
            (R5-R7).
        loss_fn: per-example loss `(labels, logits) -> [n]`; None for
            `losses.SoftmaxCrossEntropy()`.
        eval_top_k: the top-k errors to evaluate (1 always among them).
        gradient_allreduce: the `allreduce.GradientAllReduce`; None for its
            defaults.
        init_checkpoint: a checkpoint or model_dir of another run to take
            the initial weights from (weights only; a run resuming from its
            own checkpoint ignores it).
        init_skip_classifier: leave the output layer freshly initialised
            (fine-tuning to another number of classes).
        export: write model_dir/export/<step>/ (a SavedModel) when the
            training is finished.
        profile_steps: None, or (first, last): trace these training steps
            (rounded outward to whole loops) with the TensorFlow profiler
            into model_dir/train/plugins/profile/ (`profiling.StepProfiler`;
            the chief's).
        where: the prefix of the settings' names in error messages.

    Returns:
        A `TrainResult`: the model, the metrics dict also written to
        model_dir/metrics.json, and the export's path.

    Raises:
        ValueError: for a bad mode or batch sizes, a model that does not fit
            the data, an init checkpoint of another model (all before
            anything is written to model_dir).
        FileNotFoundError: for an init checkpoint that does not exist, or
            evaluating or exporting with no checkpoint.
        preemption.Preempted: when a worker got SIGTERM or Ctrl-C; every
            worker has saved the checkpoint of the current step (and the
            chief metrics.json) first.
    """
    _check_mode(mode, data)
    if epochs is None:
        raise ValueError(f"{where}epochs is required")
    profiling.check_profile_steps(profile_steps, f"{where}profile_steps")
    jit_compile, xla_reason = xla_choice.choose_jit_compile(
        jit_compile, [] if jit_compile != xla_choice.AUTO else
        xla_choice.local_accelerators(), where=where)
    logging.info("XLA %s (%s)", "on" if jit_compile else "off", xla_reason)
    strategy = strategy or distribute.build_strategy()
    packing = worker_packing.describe(strategy)
    n, global_batch = resolve_batch_sizes(packing["workers"],
                                          per_replica_batch_size,
                                          global_batch_size, where)
    init_path = (warm_start.resolve_checkpoint(init_checkpoint)
                 if init_checkpoint else None)
    schedule_fn = schedule_fn or schedules.build_learning_rate_schedule
    run_ = _Run(strategy, data, model, global_batch, epochs, seed, precision,
                jit_compile, schedule_fn, optimizer_fn or optimizers.MomentumSGD)
    run_.xla = {"jit_compile": jit_compile, "reason": xla_reason}
    run_.packing = packing
    if packing["workers_per_replica"] > 1:
        worker_packing.group_batch_norm(run_.model, n)
    if init_path:  # A resumed run's own checkpoint overrides it below.
        logging.info("%s", warm_start.initialize_from_checkpoint(
            run_.model, init_path, skip_classifier=init_skip_classifier))
    tf.io.gfile.makedirs(model_dir)  # After the checks: none leaves a dir.
    chief = distribute.is_chief(strategy)
    manager = checkpoints.checkpoint_manager(
        run_.checkpoint, model_dir, run_.global_step, checkpoint_every_steps,
        chief=chief, task_id=_task_id(strategy), max_to_keep=keep_checkpoints)
    restored = manager.restore_or_initialize()  # The newest intact one.
    start_step = int(run_.global_step.numpy())
    if mode in ("eval", "export") and restored is None:
        raise FileNotFoundError(
            f"--mode={mode} needs a checkpoint, but {model_dir} has no intact "
            f"one; train first with --mode=train or train_and_eval")
    statistics = layers.ReplicaStatistics(run_.model)
    record = outputs.read_metrics(model_dir)  # An earlier run's, or {}.
    if mode == "export":
        return TrainResult(run_.model, record, model_dir,
                           _export(run_, statistics, model_dir, chief))
    train_ds, eval_ds = _datasets(
        run_, n * packing["workers_per_replica"], seed, start_step)
    trainer = Trainer(
        strategy, run_.model, run_.optimizer, train_ds, global_batch,
        run_.global_step, extra_outputs=lambda: {
            "skipped_images": source.num_skipped_images(run_.data)},
        gradient_allreduce=gradient_allreduce or allreduce.GradientAllReduce(),
        skipped_steps=run_.skipped_steps, jit_compile=jit_compile,
        replica_statistics=statistics, loss_fn=loss_fn)
    earlier = record.get("eval", {})
    evaluator = None
    if eval_ds is not None:
        evaluator = Evaluator(strategy, run_.model, eval_ds, run_.global_step,
                              history=earlier.get("top1_error_history"),
                              steps=earlier.get("evaluated_steps"),
                              replica_statistics=statistics, top_k=eval_top_k,
                              loss_fn=loss_fn, ema_weights=run_.ema_weights)
    # SIGTERM and Ctrl-C stop the run after a training loop or between two
    # evaluation batches.
    watcher = preemption.PreemptionWatcher(strategy, run_.global_step)
    if evaluator is not None:
        evaluator.before_step = watcher.check_between_eval_batches
    train_dir = os.path.join(model_dir, TRAIN_SUMMARY_DIR)
    validation_dir = os.path.join(model_dir, VALIDATION_SUMMARY_DIR)
    profiler = profiling.StepProfiler(train_dir, profile_steps if chief
                                      else None, steps_per_loop,
                                      run_.global_step)
    actions = [progress.ProgressReporter(run_.global_step, run_.total_steps,
                                         run_.steps_per_epoch),
               profiler, watcher]
    eval_lines = progress.EvalReporter(run_.global_step, run_.steps_per_epoch)
    controller = orbit.Controller(
        global_step=run_.global_step, trainer=trainer,
        evaluator=eval_lines.timing(evaluator),
        strategy=strategy, steps_per_loop=steps_per_loop,
        checkpoint_manager=manager,
        summary_dir=train_dir if chief else None,
        eval_summary_dir=validation_dir if chief else None,
        train_actions=actions, eval_actions=[eval_lines])
    if chief and mode == "eval":
        outputs.write_operative_config(
            model_dir, validation_dir, start_step,
            name=outputs.EVAL_OPERATIVE_CONFIG)
    elif chief:
        outputs.write_operative_config(model_dir, train_dir, start_step)
    if chief:
        hparams.write_session(model_dir, hparams.recipe_hparams(
            run_.schedule, run_.optimizer, global_batch_size=global_batch,
            num_replicas=packing["workers"], epochs=epochs,
            precision=precision, seed=seed, schedule_fn=schedule_fn))
    seconds_before = float(run_.train_seconds.numpy())

    def finish():
        metrics = _metrics(run_, global_batch, start_step, seconds_before,
                           evaluator, record)
        if chief:
            outputs.write_metrics(model_dir, metrics)
        return metrics

    try:
        if mode != "eval":
            stops = _eval_boundaries(start_step, run_.total_steps,
                                     eval_every_epochs, run_.steps_per_epoch,
                                     eval_at_epochs)
            pending = record.get(preemption.PENDING_EVAL_KEY)
            profiler.start_if_due()
            _train(controller, run_, stops, mode == "train_and_eval",
                   eval_first=(mode == "train_and_eval"
                               and pending == start_step))
        if mode == "eval" or (mode == "train_and_eval"
                              and evaluator.last_output is None):
            controller.evaluate(steps=-1)
    except preemption.Preempted as stop:
        metrics = finish()  # The evaluations completed so far, none partial.
        if chief and stop.eval_pending and mode == "train_and_eval":
            outputs.write_metrics(model_dir, dict(
                metrics, **{preemption.PENDING_EVAL_KEY: stop.step}))
        raise
    finally:
        profiler.close()
        watcher.close()
        # The CLI exits without the interpreter's teardown: events on disk.
        controller.summary_manager.flush()
        if evaluator is not None:
            controller.eval_summary_manager.flush()
    metrics = finish()
    export_path = None
    finished = int(run_.global_step.numpy()) >= run_.total_steps
    if finished and run_.ema_weights is not None:
        run_.ema_weights.keep_in()  # As model.fit ends: the average.
    if export and finished and mode != "eval":
        export_path = _export(run_, statistics, model_dir, chief)
    return TrainResult(run_.model, metrics, model_dir, export_path)


@gin.configurable(denylist=["model_dir", "mode"])
def run(model_dir, mode="train_and_eval", data=gin.REQUIRED,
        model_fn=gin.REQUIRED, per_replica_batch_size=32,
        global_batch_size=None, epochs=gin.REQUIRED, seed=0,
        steps_per_loop=50, eval_every_epochs=1.0, eval_at_epochs=(),
        checkpoint_every_steps=500, keep_checkpoints=3,
        precision="float32", jit_compile=False, eval_top_k=(1, 5),
        init_checkpoint=None, init_skip_classifier=False, export=True,
        profile_steps=None, optimizer_fn=None):
    """The CLI's run: `train_model` of the gin-configured job.

    The strategy is `distribute.build_strategy`, the schedule
    `schedules.build_learning_rate_schedule`, the optimizer `optimizer_fn`
    (`optimizers.MomentumSGD` unless gin names another, e.g.
    `train_lib.run.optimizer_fn = @LARS`), the loss
    `losses.SoftmaxCrossEntropy`, the all-reduce
    `allreduce.GradientAllReduce`, each configured by gin.

    Args:
        model_dir: see `train_model`.
        mode: `train`, `eval`, `train_and_eval` or `export`.
        data: a callable returning a `source.DataSource` (e.g.
            `@fashion_mnist`).
        model_fn: a callable(input_shape, num_classes) returning a Keras model.
        per_replica_batch_size, global_batch_size, epochs, seed,
        steps_per_loop, eval_every_epochs, eval_at_epochs,
        checkpoint_every_steps, keep_checkpoints, precision, jit_compile,
        eval_top_k, init_checkpoint, init_skip_classifier, export,
        profile_steps: see `train_model`.
        optimizer_fn: the optimizer's class or factory, called with
            `learning_rate=` and `aggregate_gradients=False`: None (or
            `@MomentumSGD`) for the paper's, `@LARS` or `@LAMB` past 8k.

    Returns:
        The metrics dict also written to model_dir/metrics.json.
    """
    _check_optimizer_fn(optimizer_fn)
    strategy = distribute.build_strategy()
    _check_mode_name(mode)  # Before the data is loaded.
    resolve_batch_sizes(worker_packing.describe(strategy)["workers"],
                        per_replica_batch_size,
                        global_batch_size)
    profiling.check_profile_steps(profile_steps)
    return train_model(
        model_dir, data(), model_fn, strategy, mode=mode,
        per_replica_batch_size=per_replica_batch_size,
        global_batch_size=global_batch_size, epochs=epochs, seed=seed,
        steps_per_loop=steps_per_loop, eval_every_epochs=eval_every_epochs,
        eval_at_epochs=eval_at_epochs,
        checkpoint_every_steps=checkpoint_every_steps,
        keep_checkpoints=keep_checkpoints, precision=precision,
        jit_compile=jit_compile, loss_fn=losses.SoftmaxCrossEntropy(),
        eval_top_k=eval_top_k,
        gradient_allreduce=allreduce.GradientAllReduce(),
        init_checkpoint=init_checkpoint,
        init_skip_classifier=init_skip_classifier, export=export,
        profile_steps=profile_steps, optimizer_fn=optimizer_fn).metrics


def _check_optimizer_fn(optimizer_fn):
    """Refuses an optimizer setting that is not a class or callable (a
    gin binding of an instance, `@LARS()`, or a name string)."""
    if optimizer_fn is not None and not callable(optimizer_fn):
        raise ValueError(
            f"train_lib.run.optimizer_fn must be an optimizer class or "
            f"factory called with learning_rate= (e.g. @LARS, without "
            f"parentheses), got {optimizer_fn!r}")
