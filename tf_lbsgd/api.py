"""The Python API: the whole recipe on your own Keras model and data.

    import tf_lbsgd

    strategy = tf_lbsgd.build_strategy("mirrored", num_replicas=4)
    result = tf_lbsgd.train(
        model_fn, (x_train, y_train), "runs/mine", strategy=strategy,
        eval_data=(x_test, y_test),
        recipe=tf_lbsgd.Recipe(epochs=10, global_batch_size=512,
                               base_lr=0.1, base_batch_size=256,
                               warmup_epochs=2))
    result.model.predict(x_test)

`train` turns the data into a `source.DataSource` (`adapters`), the settings
into the schedule and optimizer builders, and runs `train_lib.train_model`:
the same run as the CLI's (loss / kn, L2 decay rule, momentum correction,
per-epoch shuffle split across workers, per-worker BN where the model uses
`WorkerBatchNorm`, mixed precision, the gradient all-reduce), writing the
same model_dir and resuming from it.
"""

import dataclasses
import functools
from typing import Callable, Optional, Sequence, Union

import tensorflow as tf

from tf_lbsgd import allreduce
from tf_lbsgd import distribute
from tf_lbsgd import lamb
from tf_lbsgd import lars
from tf_lbsgd import losses
from tf_lbsgd import optimizers
from tf_lbsgd import schedules
from tf_lbsgd import train_lib
from tf_lbsgd.data import adapters
from tf_lbsgd.data import source


OPTIMIZERS = ("momentum", "lars", "lamb")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The settings of a run, with the paper's values as defaults.

    Batch (R9): give the global batch kn or the per-worker n.
    Learning rate (R1-R4, `schedules.build_learning_rate_schedule`): the
    rate `base_lr` per `base_batch_size` images scaled by `scaling` to kn,
    reached by a `warmup` over `warmup_epochs`, then decayed by `decay`.
    Optimizer (R5-R7, `optimizers.MomentumSGD`): momentum SGD with L2
    decay of the weights `decay_rule` picks (default: matrices and kernels).
    Past 8k, `optimizer='lars'` (`lars.LARS`, with `trust_coefficient`) or
    `'lamb'` (`lamb.LAMB`; `l2_weight_decay` is its decay), usually with
    `decay='polynomial'` (`decay_power`) and `warmup_start_lr=0`; or any
    factory called as `optimizer(learning_rate=, aggregate_gradients=False)`.
    `use_ema` keeps a moving average of the weights (`ema_momentum`), which
    the evaluations and the export use.
    The rest: precision, XLA, loss, metrics, loop, checkpoints, warm start,
    export and the profiler's `profile_steps` (see `train_lib.train_model`).
    """

    epochs: float
    global_batch_size: Optional[int] = None
    per_replica_batch_size: Optional[int] = None
    base_lr: float = 0.1
    base_batch_size: int = 256
    scaling: str = "linear"
    warmup: str = "gradual"
    warmup_epochs: float = 5.0
    decay: str = "step"
    decay_epochs: Sequence[float] = (30, 60, 80)
    decay_factor: float = 0.1
    decay_power: float = 2.0
    warmup_start_lr: Optional[float] = None
    optimizer: Union[str, Callable] = "momentum"
    trust_coefficient: float = 0.001
    momentum: float = 0.9
    nesterov: bool = False
    velocity_form: str = "unscaled"
    momentum_correction: bool = True
    l2_weight_decay: float = 1e-4
    decay_bias: bool = False
    decay_rule: Optional[Callable] = None
    use_ema: bool = False
    ema_momentum: float = 0.99
    precision: str = "float32"
    jit_compile: Union[bool, str] = False  # Or 'auto': see train_lib.
    label_smoothing: float = 0.0
    eval_top_k: Sequence[int] = (1, 5)
    bytes_per_pack: int = 0
    gradient_compression: str = "none"
    seed: int = 0
    steps_per_loop: int = 50
    eval_every_epochs: float = 1.0
    eval_at_epochs: Sequence[float] = ()
    checkpoint_every_steps: int = 500
    keep_checkpoints: int = 3
    init_checkpoint: Optional[str] = None
    init_skip_classifier: bool = False
    export: bool = True
    profile_steps: Optional[Sequence[int]] = None

    def __post_init__(self):
        if (isinstance(self.epochs, bool)
                or not isinstance(self.epochs, (int, float))
                or not self.epochs > 0):
            raise ValueError(f"Recipe.epochs must be a positive number, got "
                             f"{self.epochs!r}")
        if self.global_batch_size is None and (
                self.per_replica_batch_size is None):
            raise ValueError("Recipe needs global_batch_size (kn) or "
                             "per_replica_batch_size (n)")
        if not callable(self.optimizer) and self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Recipe.optimizer must be one of {OPTIMIZERS} "
                             f"or an optimizer factory, got "
                             f"{self.optimizer!r}")

    def schedule_fn(self):
        """`build_learning_rate_schedule` with this recipe's settings."""
        return functools.partial(
            schedules.build_learning_rate_schedule, base_lr=self.base_lr,
            base_batch_size=self.base_batch_size, scaling=self.scaling,
            warmup=self.warmup, warmup_epochs=self.warmup_epochs,
            decay=self.decay, decay_epochs=tuple(self.decay_epochs),
            decay_factor=self.decay_factor, decay_power=self.decay_power,
            warmup_start_lr=self.warmup_start_lr)

    def optimizer_fn(self):
        """The optimizer's factory with this recipe's settings: `MomentumSGD`,
        `LARS`, `LAMB` or the recipe's own `optimizer`."""
        ema_settings = ({"use_ema": True, "ema_momentum": self.ema_momentum}
                        if self.use_ema else {})
        if callable(self.optimizer):
            return functools.partial(self.optimizer, **ema_settings)
        if self.optimizer == "lamb":
            return functools.partial(
                lamb.LAMB, l2_weight_decay=self.l2_weight_decay,
                decay_bias=self.decay_bias, decay_rule=self.decay_rule,
                **ema_settings)
        momentum_settings = dict(
            momentum=self.momentum, nesterov=self.nesterov,
            l2_weight_decay=self.l2_weight_decay, decay_bias=self.decay_bias,
            decay_rule=self.decay_rule, **ema_settings)
        if self.optimizer == "lars":
            return functools.partial(
                lars.LARS, trust_coefficient=self.trust_coefficient,
                **momentum_settings)
        return functools.partial(
            optimizers.MomentumSGD, velocity_form=self.velocity_form,
            momentum_correction=self.momentum_correction,
            **momentum_settings)


def build_strategy(kind="mirrored", num_replicas=None, **options):
    """A `tf.distribute.Strategy` by name (`distribute.build_strategy`).

    Build it before any other TensorFlow op runs: `mirrored` on a host
    without GPUs splits the CPU into `num_replicas` logical devices, which
    TensorFlow allows only before it initialises.
    """
    return distribute.build_strategy(kind=kind, num_replicas=num_replicas,
                                     **options)


def as_data_source(train_data, eval_data=None, num_classes=None,
                   num_train=None, num_eval=None):
    """The `DataSource` of `train_data`: a DataSource as it is, (images,
    labels) arrays through `adapters.from_arrays`, a `tf.data.Dataset` of
    unbatched examples through `adapters.from_dataset`.

    Raises:
        ValueError: for other types, or eval data of another kind than the
            training data.
    """
    if isinstance(train_data, source.DataSource):
        if eval_data is not None:
            raise ValueError("eval_data goes into the DataSource itself "
                             "(its eval_dataset_fn), not beside it")
        return train_data
    if isinstance(train_data, tf.data.Dataset):
        if eval_data is not None and not isinstance(eval_data,
                                                    tf.data.Dataset):
            raise ValueError(f"train_data is a tf.data.Dataset, so eval_data "
                             f"must be one too, got "
                             f"{type(eval_data).__name__}")
        return adapters.from_dataset(train_data, eval_data, num_classes,
                                     num_train=num_train, num_eval=num_eval)
    if isinstance(train_data, (tuple, list)):
        return adapters.from_arrays(train_data, eval_data, num_classes)
    raise ValueError(
        f"train_data must be (images, labels) arrays, a tf.data.Dataset of "
        f"(image, label) examples or a DataSource, got "
        f"{type(train_data).__name__}")


def _strategy(strategy):
    if strategy is None or isinstance(strategy, tf.distribute.Strategy):
        return strategy or distribute.build_strategy()
    if isinstance(strategy, str):
        return build_strategy(strategy)
    raise ValueError(f"strategy must be a tf.distribute.Strategy or one of "
                     f"{distribute.STRATEGIES}, got {strategy!r}")


def train(model, train_data, model_dir, *, recipe, eval_data=None,
          num_classes=None, num_train=None, num_eval=None, strategy=None,
          mode=None):
    """Trains `model` on `train_data` with the large-minibatch recipe.

    Args:
        model: a `keras.Model` (built under `strategy.scope()`, or cloned
            there) or a model_fn taking any of `input_shape`, `num_classes`
            as keywords; its output: [batch, classes] logits.
        train_data: `(images, labels)` numpy arrays, a finite
            `tf.data.Dataset` of unbatched `(image, label)` examples, or a
            `source.DataSource` (e.g. for input read per worker from files).
        model_dir: where checkpoints, TensorBoard events, metrics.json and
            the export go; a re-run resumes from it.
        recipe: the `Recipe`.
        eval_data: the evaluation examples, of the same kind as train_data.
        num_classes: the number of classes; None to take the model's.
        num_train, num_eval: the sizes of datasets tf.data cannot count.
        strategy: a `tf.distribute.Strategy` or its kind's name (see
            `build_strategy`); None for one replica (or all local GPUs).
        mode: `train_and_eval`, `train`, `eval` or `export`; None for
            `train_and_eval` with eval_data and `train` without.

    Returns:
        A `train_lib.TrainResult`: the trained `model`, its `metrics`, the
        `model_dir` and the `export_path` of the SavedModel.

    Raises:
        ValueError, FileNotFoundError: bad input (named), before anything is
            written to model_dir.
    """
    strategy = _strategy(strategy)
    data = as_data_source(train_data, eval_data, num_classes, num_train,
                          num_eval)
    if mode is None:
        mode = "train" if data.eval_dataset_fn is None else "train_and_eval"
    return train_lib.train_model(
        model_dir, data, model, strategy, mode=mode,
        per_replica_batch_size=recipe.per_replica_batch_size,
        global_batch_size=recipe.global_batch_size, epochs=recipe.epochs,
        seed=recipe.seed, steps_per_loop=recipe.steps_per_loop,
        eval_every_epochs=recipe.eval_every_epochs,
        eval_at_epochs=recipe.eval_at_epochs,
        checkpoint_every_steps=recipe.checkpoint_every_steps,
        keep_checkpoints=recipe.keep_checkpoints, precision=recipe.precision,
        jit_compile=recipe.jit_compile, schedule_fn=recipe.schedule_fn(),
        optimizer_fn=recipe.optimizer_fn(),
        loss_fn=losses.SoftmaxCrossEntropy(
            label_smoothing=recipe.label_smoothing),
        eval_top_k=recipe.eval_top_k,
        gradient_allreduce=allreduce.GradientAllReduce(
            bytes_per_pack=recipe.bytes_per_pack,
            compression=recipe.gradient_compression),
        init_checkpoint=recipe.init_checkpoint,
        init_skip_classifier=recipe.init_skip_classifier,
        export=recipe.export, profile_steps=recipe.profile_steps,
        where="Recipe.")
