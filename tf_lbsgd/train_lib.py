"""The gin root: builds strategy, data, model and optimizer, then runs orbit.

Everything is created inside `strategy.scope()`; `run` is the one
`@gin.configurable` entry point (bindings such as `train_lib.run.epochs = 2`).
"""

import os
import time

import gin
import orbit
import tensorflow as tf

from tf_lbsgd import distribute
from tf_lbsgd import optimizers
from tf_lbsgd import outputs
from tf_lbsgd import schedules
from tf_lbsgd.data import source
from tf_lbsgd.progress import ProgressReporter
from tf_lbsgd.trainer import Evaluator
from tf_lbsgd.trainer import Trainer

MODES = ("train", "eval", "train_and_eval")


def resolve_batch_sizes(num_replicas, per_replica_batch_size,
                        global_batch_size):
    """Returns (n, kn): per-replica and global batch (kn = k * n).

    Either size may be given; if both are, they must agree.

    Raises:
        ValueError: naming the numbers when kn is not divisible by k or the
            two sizes disagree.
    """
    if global_batch_size is None:
        return per_replica_batch_size, per_replica_batch_size * num_replicas
    n = source.check_divisible(global_batch_size, num_replicas)
    if per_replica_batch_size not in (None, n):
        raise ValueError(
            f"global batch {global_batch_size} over {num_replicas} replicas is "
            f"{n} per replica, but per_replica_batch_size is "
            f"{per_replica_batch_size}")
    return n, global_batch_size


class _Run:
    """The objects of one run, built under the strategy's scope."""

    def __init__(self, strategy, data, model_fn, n, global_batch, epochs):
        self.strategy = strategy
        self.data = data
        self.steps_per_epoch = data.num_train / global_batch
        self.total_steps = schedules.epochs_to_steps(epochs,
                                                     self.steps_per_epoch)
        with strategy.scope():
            self.model = model_fn(input_shape=data.image_shape,
                                  num_classes=data.num_classes)
            schedule = schedules.build_learning_rate_schedule(
                global_batch_size=global_batch,
                steps_per_epoch=self.steps_per_epoch, total_epochs=epochs)
            self.optimizer = optimizers.build_optimizer(learning_rate=schedule)
            self.optimizer.build(self.model.trainable_variables)
            self.global_step = orbit.utils.create_global_step()
            self.train_seconds = tf.Variable(0.0, dtype=tf.float64,
                                             trainable=False,
                                             name="train_seconds")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer,
            global_step=self.global_step, train_seconds=self.train_seconds)


def _checkpoint_manager(run, model_dir, every_steps):
    return tf.train.CheckpointManager(
        run.checkpoint, directory=model_dir, max_to_keep=3,
        step_counter=run.global_step, checkpoint_interval=every_steps)


def _datasets(run, n, seed, start_step):
    train = run.strategy.distribute_datasets_from_function(
        lambda ctx: run.data.train_dataset_fn(ctx, n, seed, start_step))
    evaluation = run.strategy.distribute_datasets_from_function(
        lambda ctx: run.data.eval_dataset_fn(ctx, n))
    return train, evaluation


def _eval_boundaries(start, total, every_epochs, steps_per_epoch):
    """Steps at which to pause training for an evaluation: every
    `every_epochs` epochs (rounded per boundary, so a fractional
    steps_per_epoch does not drift) and at the end."""
    stops = []
    if every_epochs:
        boundary = 1
        while True:
            step = schedules.epochs_to_steps(boundary * every_epochs,
                                             steps_per_epoch)
            if step >= total:
                break
            stops.append(step)
            boundary += 1
    return [s for s in stops if s > start] + [total]


def _metrics(run, global_batch, steps_done, seconds, eval_output):
    step = int(run.global_step.numpy())
    metrics = {
        "skipped_images": source.num_skipped_images(run.data),
        "global_step": step,
        "epochs": step / run.steps_per_epoch,
        "global_batch_size": global_batch,
        "num_replicas": run.strategy.num_replicas_in_sync,
        "train_wall_time_s": float(run.train_seconds.numpy()),
        "examples_per_second": steps_done * global_batch / seconds
        if seconds > 0 else None,
    }
    if eval_output:
        metrics["eval"] = {
            "top1_accuracy": 1.0 - eval_output["eval/top1_error"],
            "top1_error": eval_output["eval/top1_error"],
            "top5_error": eval_output["eval/top5_error"],
            "loss": eval_output["eval/loss"],
            "examples": eval_output["eval/examples"],
            "median5_top1_error": eval_output["eval/median5_top1_error"],
        }
    return metrics


def _train(controller, run, stops, eval_each):
    """Trains to each stop (evaluating there if asked); returns eval output."""
    eval_output = None
    for stop in stops:
        if stop <= int(run.global_step.numpy()):
            continue
        start = time.time()
        controller.train(steps=stop, checkpoint_at_completion=False)
        run.train_seconds.assign_add(time.time() - start)
        controller.save_checkpoint()
        if eval_each:
            eval_output = controller.evaluate(steps=-1)
    return eval_output


@gin.configurable(denylist=["model_dir", "mode"])
def run(model_dir, mode="train_and_eval", data=gin.REQUIRED,
        model_fn=gin.REQUIRED, per_replica_batch_size=32,
        global_batch_size=None, epochs=gin.REQUIRED, seed=0,
        steps_per_loop=50, eval_every_epochs=1.0,
        checkpoint_every_steps=500):
    """Trains and/or evaluates a model with the large-minibatch recipe.

    Args:
        model_dir: where checkpoints, events, the operative config and
            metrics.json go. Re-running resumes from its last checkpoint.
        mode: `train`, `eval` or `train_and_eval`.
        data: a callable returning a `source.DataSource` (e.g.
            `@fashion_mnist`).
        model_fn: a callable(input_shape, num_classes) returning a Keras model.
        per_replica_batch_size: n, examples per worker (R9).
        global_batch_size: kn; if given, n is derived from it.
        epochs: training length in epochs.
        seed: seed of the per-epoch shuffle (R12) and augmentation.
        steps_per_loop: steps per `tf.function` call (one host sync each).
        eval_every_epochs: evaluate every this many epochs (0: only at end).
        checkpoint_every_steps: checkpoint interval in steps.

    Returns:
        The metrics dict also written to model_dir/metrics.json.

    Raises:
        ValueError: for a bad mode or batch sizes.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; expected one of {MODES}")
    strategy = distribute.build_strategy()
    n, global_batch = resolve_batch_sizes(strategy.num_replicas_in_sync,
                                          per_replica_batch_size,
                                          global_batch_size)
    run_ = _Run(strategy, data(), model_fn, n, global_batch, epochs)
    chief = distribute.is_chief(strategy)
    manager = _checkpoint_manager(run_, model_dir, checkpoint_every_steps)
    manager.restore_or_initialize()
    start_step = int(run_.global_step.numpy())
    if mode == "eval" and manager.latest_checkpoint is None:
        raise FileNotFoundError(
            f"--mode=eval needs a checkpoint, but {model_dir} has none; train "
            f"first with --mode=train or train_and_eval")
    train_ds, eval_ds = _datasets(run_, n, seed, start_step)
    trainer = Trainer(
        strategy, run_.model, run_.optimizer, train_ds, global_batch,
        run_.global_step, extra_outputs=lambda: {
            "data/skipped_images": source.num_skipped_images(run_.data)})
    earlier = outputs.read_metrics(model_dir).get("eval", {})
    evaluator = Evaluator(strategy, run_.model, eval_ds,
                          history=earlier.get("top1_error_history"))
    controller = orbit.Controller(
        global_step=run_.global_step, trainer=trainer, evaluator=evaluator,
        strategy=strategy, steps_per_loop=steps_per_loop,
        checkpoint_manager=manager,
        summary_dir=os.path.join(model_dir, "train") if chief else None,
        eval_summary_dir=os.path.join(model_dir, "eval") if chief else None,
        train_actions=[ProgressReporter(run_.global_step, run_.total_steps,
                                        run_.steps_per_epoch)])
    if chief:
        outputs.write_operative_config(model_dir,
                                       os.path.join(model_dir, "train"),
                                       start_step)
    eval_output = None
    seconds_before = float(run_.train_seconds.numpy())
    if mode != "eval":
        stops = _eval_boundaries(start_step, run_.total_steps,
                                 eval_every_epochs, run_.steps_per_epoch)
        eval_output = _train(controller, run_, stops, mode == "train_and_eval")
    if mode == "eval" or (mode == "train_and_eval" and eval_output is None):
        eval_output = controller.evaluate(steps=-1)
    steps_done = int(run_.global_step.numpy()) - start_step
    seconds = float(run_.train_seconds.numpy()) - seconds_before
    metrics = _metrics(run_, global_batch, steps_done, seconds, eval_output)
    if eval_output:
        metrics["eval"]["top1_error_history"] = evaluator.history
    elif earlier:  # No evaluation now: keep the last one (and its history).
        metrics["eval"] = earlier
    if not steps_done:  # Nothing trained now: keep the earlier throughput.
        metrics["examples_per_second"] = outputs.read_metrics(model_dir).get(
            "examples_per_second")
    if chief:
        outputs.write_metrics(model_dir, metrics)
    return metrics
