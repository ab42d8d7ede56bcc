"""The orbit train and eval loops of synchronous large-minibatch SGD.

One train step, on every replica at once under `strategy.run`:

    logits = model(x_j, training=True)          # per-replica BN (R9)
    loss_j = sum_i l(x_ij) / kn                 # global-batch normalisation (R8)
    g_j = grad(s * loss_j)                      # s: loss scale (float16), else 1
    g = allreduce_sum_j g_j                     # allreduce.GradientAllReduce
    if g is finite: w <- momentum SGD update of g / s with L2 decay (R5-R7)
    else: skip the step, s <- s / 2            # the same on every replica

The forward and backward pass can be compiled with XLA (`jit_compile`); the
all-reduce and the update stay outside it.

orbit runs `steps_per_loop` of these inside one `tf.function` (a
`tf.while_loop` over a tensor step count), so the host syncs once per loop.
"""

import math
import time

from absl import logging
import keras
import numpy as np
import orbit
import tensorflow as tf

from tf_lbsgd import allreduce
from tf_lbsgd import losses
from tf_lbsgd import precision
from tf_lbsgd.analysis.run_outputs import median_of_final


class _Accumulators:
    """Named per-replica sums, one SUM-on-read vector: one collective per read.

    Create under `strategy.scope()`. Reading a SUM-on-read variable under
    MultiWorkerMirroredStrategy is an all-reduce across workers; one vector
    instead of a variable per name makes it one all-reduce per loop.
    """

    def __init__(self, names):
        self.names = list(names)
        self.sums = tf.Variable(
            tf.zeros([len(self.names)]), trainable=False, name="sums",
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.SUM)

    def reset(self):
        self.sums.assign(tf.zeros_like(self.sums))

    def add(self, **values):
        """Adds one value per name (every name must be given)."""
        self.sums.assign_add(tf.stack(
            [tf.cast(values[name], tf.float32) for name in self.names]))

    def read(self):
        return dict(zip(self.names, self.sums.numpy().tolist()))


def top_k_correct(labels, logits, k, weights=None):
    """Number of examples whose label is among the k largest logits."""
    hit = tf.cast(tf.math.in_top_k(tf.cast(labels, tf.int32),
                                   tf.cast(logits, tf.float32), k), tf.float32)
    return tf.reduce_sum(hit if weights is None else hit * weights)


def current_learning_rate(optimizer):
    """The rate the optimizer applies at its current iteration."""
    lr = optimizer.learning_rate
    return float(lr.numpy() if hasattr(lr, "numpy") else lr)


class Trainer(orbit.StandardTrainer):
    """Synchronous data-parallel SGD over all replicas of `strategy`.

    Args:
        strategy: the `tf.distribute.Strategy` (k replicas).
        model: a Keras model returning logits.
        optimizer: a Keras optimizer that takes already summed gradients
            (`MomentumSGD(aggregate_gradients=False)`).
        train_dataset: a distributed dataset of (images, labels) per replica.
        global_batch_size: kn, the divisor of every replica's loss (R8).
        global_step: the tf.Variable step counter kept in the checkpoint.
        extra_outputs: optional callable returning more scalars to report
            after each loop (e.g. the count of skipped corrupt images).
        gradient_allreduce: the `allreduce.GradientAllReduce` summing the
            replicas' gradients (default: one pack, no compression).
        skipped_steps: int64 variable counting steps skipped for non-finite
            gradients (loss scaling); created if not given.
        jit_compile: compile each replica's forward and backward with XLA
            (build the model under `layers.built_for_xla(True)` for the
            batch-norm ops XLA handles best).
        replica_statistics: the model's `layers.ReplicaStatistics`, synced
            before each loop (shared with the `Evaluator`); None for none.
        loss_fn: callable (labels, logits) -> [n] float32 per-example losses,
            e.g. `losses.SoftmaxCrossEntropy(label_smoothing=0.1)`; None for
            the plain softmax cross-entropy. `loss` reports it.

    Each loop returns `loss`, `top1_error` (over the loop's steps),
    `learning_rate`, `loss_scale`, `skipped_steps` and `examples_per_second`
    (plus `extra_outputs`); orbit writes them as these tags to the summary
    dir, model_dir/train/.

    Raises:
        ValueError: if the optimizer would all-reduce the gradients again.
    """

    def __init__(self, strategy, model, optimizer, train_dataset,
                 global_batch_size, global_step, extra_outputs=None,
                 gradient_allreduce=None, skipped_steps=None,
                 jit_compile=False, replica_statistics=None, loss_fn=None):
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        # Any other Keras optimizer sums again (Keras 3 has no public switch).
        if getattr(inner, "aggregate_gradients", True):
            raise ValueError(
                f"optimizer {inner.name!r} sums gradients over replicas "
                f"itself, but the Trainer all-reduces them already; build it "
                f"with aggregate_gradients=False")
        super().__init__(train_dataset, orbit.StandardTrainerOptions(
            use_tf_function=True, use_tf_while_loop=True))
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.global_batch_size = global_batch_size
        self.global_step = global_step
        self.extra_outputs = extra_outputs
        self.loss_fn = loss_fn or losses.per_example_cross_entropy
        self.gradient_allreduce = (gradient_allreduce
                                   or allreduce.GradientAllReduce())
        self.loss_scaling = isinstance(optimizer,
                                       keras.optimizers.LossScaleOptimizer)
        self._gradients = (tf.function(self._forward_backward,
                                       jit_compile=True) if jit_compile
                           else self._forward_backward)
        with strategy.scope():
            self.sums = _Accumulators(["loss", "correct", "examples"])
            if skipped_steps is None:
                skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                            name="skipped_steps")
        self.skipped_steps = skipped_steps
        self.replica_statistics = replica_statistics
        self._loop_start = None

    def train_loop_begin(self):
        if self.replica_statistics is not None:
            self.replica_statistics.sync()
            self.replica_statistics.trained()  # By the loop that follows.
        self.sums.reset()
        self._loop_start = time.time()

    def _forward_backward(self, images, labels):
        """This replica's logits, loss (R8) and gradients of the scaled loss."""
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            per_example = self.loss_fn(labels, logits)
            loss = losses.global_batch_loss(per_example, self.global_batch_size)
            scaled = (self.optimizer.scale_loss(loss) if self.loss_scaling
                      else loss)
        return logits, loss, tape.gradient(scaled,
                                           self.model.trainable_variables)

    def _replica_step(self, images, labels):
        logits, loss, grads = self._gradients(images, labels)
        grads = self.gradient_allreduce(grads)
        skipped = tf.constant(False)
        if self.loss_scaling:  # The same summed gradients on every replica.
            skipped = tf.logical_not(self.optimizer.check_finite(grads))
        self.optimizer.apply_gradients(
            zip(grads, self.model.trainable_variables))
        self.sums.add(loss=loss, correct=top_k_correct(labels, logits, 1),
                      examples=tf.shape(labels)[0])
        return skipped

    def train_step(self, iterator):
        images, labels = next(iterator)
        skipped = self.strategy.run(self._replica_step, args=(images, labels))
        if self.loss_scaling:  # Without it no step is ever skipped.
            # Every replica decided alike; the first local one speaks for all.
            skipped = self.strategy.experimental_local_results(skipped)[0]
            self.skipped_steps.assign_add(tf.cast(skipped, tf.int64))
        self.global_step.assign_add(1)

    def train_loop_end(self):
        sums = self.sums.read()
        seconds = time.time() - self._loop_start
        steps = sums["examples"] / self.global_batch_size
        loss = sums["loss"] / max(steps, 1)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"Training loss is {loss} at step "
                f"{int(self.global_step.numpy())}; stopping before the "
                f"checkpoint is overwritten")
        output = {
            "loss": loss,
            "top1_error": 1.0 - sums["correct"] / max(sums["examples"], 1),
            "learning_rate": current_learning_rate(self.optimizer),
            "loss_scale": precision.loss_scale(self.optimizer),
            "skipped_steps": int(self.skipped_steps.numpy()),
            "examples_per_second": sums["examples"] / max(seconds, 1e-9),
        }
        output.update(self.extra_outputs() if self.extra_outputs else {})
        return output


def check_top_k(top_k):
    """Checks the k of the top-k errors an `Evaluator` reports.

    Args:
        top_k: a sequence of distinct positive ints that includes 1.

    Returns:
        `top_k` as a tuple of ints, in the given order.

    Raises:
        ValueError: naming the offending `top_k`.
    """
    if isinstance(top_k, (int, np.integer, str)):
        raise ValueError(f"top_k must be a sequence of ints such as (1, 5), "
                         f"got {top_k!r}")
    ks = tuple(top_k)
    if any(isinstance(k, bool) or not isinstance(k, (int, np.integer))
           or k < 1 for k in ks):
        raise ValueError(f"top_k must hold positive ints, got {top_k!r}")
    if 1 not in ks:
        raise ValueError(f"top_k must include 1 (the evaluation history and "
                         f"its median, R14, are of the top-1 error), got "
                         f"{top_k!r}")
    if len(set(ks)) != len(ks):
        raise ValueError(f"top_k has duplicates, got {top_k!r}")
    return tuple(int(k) for k in ks)


def _num_classes(model):
    """The model's number of logits if its output shape is known, else None."""
    try:
        return model.outputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


class Evaluator(orbit.StandardEvaluator):
    """Loss and top-k errors (top-1, top-5 by default) of the evaluation set.

    The evaluation dataset yields (images, labels, weights) with weight 0 on
    the padding that fills the last global batch, so every example counts
    exactly once however many replicas share the work. `history` keeps the
    top-1 error of each evaluated step, once per step (`steps` says which),
    for the paper's median-of-final-5 statistic; seed both with an earlier
    run's to resume. Evaluating a step already in the history (a finished run
    re-run, `--mode=eval`) reports the result but records nothing new.
    With `replica_statistics` (the Trainer's), every replica evaluates with
    the BN moving statistics that a checkpoint of this step saves.

    It reports `loss`, `top{k}_error` for each k of `top_k`,
    `median5_top1_error` and `examples` (orbit writes them as these tags to
    model_dir/validation/, beside the Trainer's in model_dir/train/). A k at
    or above the number of classes counts every example as a hit (error 0,
    logged as a warning when the model's output shape says so). `loss` is
    the weighted mean of `loss_fn`: given the Trainer's label-smoothed loss
    (as Model Garden's image classification task does) it includes the
    smoothing and compares with the training `loss`; the errors do not
    depend on it.

    Args:
        strategy: the `tf.distribute.Strategy` (k replicas).
        model: the Keras model returning logits.
        eval_dataset: a distributed dataset of (images, labels, weights).
        global_step: the step counter; one history record per step.
        history: an earlier run's top-1 errors, oldest first.
        steps: the steps at which `history` was evaluated.
        replica_statistics: the Trainer's `layers.ReplicaStatistics`.
        top_k: the k of the reported top-k errors; must include 1.
        loss_fn: callable (labels, logits) -> [n] float32 per-example losses;
            None for the plain softmax cross-entropy.
        ema_weights: an `ema.EmaWeights`: evaluate the moving average of
            the weights (put back after each evaluation, also an abandoned
            one); None to evaluate the weights as trained.

    Raises:
        ValueError: for a bad `top_k` (see `check_top_k`), or history and
            steps of different lengths.
    """

    def __init__(self, strategy, model, eval_dataset, global_step,
                 history=None, steps=None, replica_statistics=None,
                 top_k=(1, 5), loss_fn=None, ema_weights=None):
        self.top_k = check_top_k(top_k)
        num_classes = _num_classes(model)
        if num_classes is not None and max(self.top_k) >= num_classes:
            logging.warning(
                "top_k %s: with %d classes, the top-%d error is 0 by "
                "definition", self.top_k, num_classes, max(self.top_k))
        self.loss_fn = loss_fn or losses.per_example_cross_entropy
        # orbit would wrap eval_step in a tf.function taking the iterator,
        # and each evaluation's new iterator costs a slow retrace (measured:
        # 7 s for the first pass over 10k images, 21 s for every later one).
        # The replica step is compiled once instead; the loop stays in Python.
        super().__init__(eval_dataset, orbit.StandardEvaluatorOptions(
            use_tf_function=False))
        self.strategy = strategy
        self.model = model
        self._compiled_step = tf.function(self._replica_step)
        self.global_step = global_step
        self.replica_statistics = replica_statistics
        self.history = list(history or [])
        # An earlier run's record without steps (older metrics.json): its
        # evaluations cannot be matched to steps and are kept as they are.
        self.steps = list(steps or [None] * len(self.history))
        if len(self.steps) != len(self.history):
            raise ValueError(
                f"{len(self.history)} evaluations in the history but "
                f"{len(self.steps)} evaluated steps")
        self.last_output = None
        self.ema_weights = ema_weights
        with strategy.scope():
            self.sums = _Accumulators(
                ["loss"] + [f"top{k}" for k in self.top_k] + ["examples"])

    def eval_begin(self):
        if self.replica_statistics is not None:  # Score the saved model.
            self.replica_statistics.sync()
        if self.ema_weights is not None:
            self.ema_weights.swap_in()
        self.sums.reset()

    def _replica_step(self, images, labels, weights):
        logits = self.model(images, training=False)
        per_example = self.loss_fn(labels, logits)
        hits = {f"top{k}": top_k_correct(labels, logits, k, weights)
                for k in self.top_k}
        self.sums.add(loss=tf.reduce_sum(per_example * weights),
                      examples=tf.reduce_sum(weights), **hits)

    # Called before every batch if set; it may raise to abandon the
    # evaluation (train_lib: `preemption.PreemptionWatcher`), which then
    # reports nothing.
    before_step = None

    def eval_step(self, iterator):
        try:
            if self.before_step is not None:
                self.before_step()  # pylint: disable=not-callable
            self.strategy.run(self._compiled_step, args=next(iterator))
        except BaseException:  # An abandoned evaluation: the raw weights back.
            if self.ema_weights is not None:
                self.ema_weights.swap_out()
            raise

    def eval_end(self):
        if self.ema_weights is not None:
            self.ema_weights.swap_out()
        sums = self.sums.read()
        count = max(sums["examples"], 1.0)
        top1_error = 1.0 - sums["top1"] / count  # Always in top_k.
        step = int(self.global_step.numpy())
        if step not in self.steps:  # One record per checkpoint step.
            self.history.append(top1_error)
            self.steps.append(step)
        errors = {f"top{k}_error": 1.0 - sums[f"top{k}"] / count
                  for k in self.top_k}
        self.last_output = {
            "loss": sums["loss"] / count,
            **errors,
            "median5_top1_error": median_of_final(self.history),
            "examples": sums["examples"],
        }
        return self.last_output
