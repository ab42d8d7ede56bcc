"""Tests for tf_lbsgd.optimizers against a numpy reference (R5-R7)."""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import optimizers
from tf_lbsgd.models.layers import WorkerBatchNorm
from tf_lbsgd.models.resnet_cifar import resnet_cifar
from tf_lbsgd.models.resnet_imagenet import resnet_imagenet
from tf_lbsgd.optimizers import MomentumSGD

STEPS = 10
MOMENTUM = 0.9
LAMBDA = 1e-2  # larger than the paper's 1e-4 so that the decay is visible.


class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Gradual warmup (R2): eta_t = start + (end - start) * min(t, T) / T."""

    def __init__(self, start=0.1, end=3.2, steps=STEPS - 1):
        self.start = start
        self.end = end
        self.steps = steps

    def __call__(self, step):
        fraction = tf.minimum(tf.cast(step, tf.float32) / self.steps, 1.0)
        return self.start + (self.end - self.start) * fraction

    def get_config(self):
        return {"start": self.start, "end": self.end, "steps": self.steps}


def _warmup_rates():
    """The rates eta_0 .. eta_{STEPS-1} that LinearWarmup gives, in numpy."""
    t = np.minimum(np.arange(STEPS) / (STEPS - 1), 1.0)
    return 0.1 + (3.2 - 0.1) * t


# Quadratic loss 0.5 * sum(a * (w - target)^2), gradient a * (w - target).
_A = np.array([0.05, 0.1, 0.2, 0.3], np.float64)
_TARGET = np.array([1.0, -2.0, 0.5, 3.0], np.float64)
_W0 = np.array([0.3, 0.7, -1.2, 0.4], np.float64)


def _quadratic_grad(w):
    return _A * (w - _TARGET)


def _reference_eq9(rates, nesterov=False, decay=LAMBDA):
    """Equation (9) of the paper, in numpy float64.

    v_{t+1} = m * (eta_{t+1} / eta_t) * v_t + eta_{t+1} * (g_t + lambda * w_t)
    w_{t+1} = w_t - v_{t+1}          (Nesterov: w_t - (m*v_{t+1} + eta*g))
    """
    w = _W0.copy()
    v = np.zeros_like(w)
    eta_old = None
    for eta in rates:
        g = _quadratic_grad(w) + decay * w
        c = 1.0 if eta_old is None else eta / eta_old
        v = MOMENTUM * c * v + eta * g
        w = w - (MOMENTUM * v + eta * g if nesterov else v)
        eta_old = eta
    return w


def _new_kernel():
    """A 2 x 2 weight matrix holding _W0 (decayed by the default rule)."""
    return keras.Variable(_W0.reshape(2, 2).astype(np.float32), name="kernel")


def _run_keras(optimizer, steps=STEPS):
    """Runs ``steps`` apply_gradients on a 2-D variable named 'kernel'."""
    kernel = _new_kernel()
    a = tf.constant(_A.reshape(2, 2), tf.float32)
    target = tf.constant(_TARGET.reshape(2, 2), tf.float32)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = 0.5 * tf.reduce_sum(a * tf.square(kernel - target))
        grad = tape.gradient(loss, kernel.value)
        optimizer.apply_gradients([(grad, kernel)])
    return kernel.numpy().reshape(-1).astype(np.float64)


def _make(velocity_form, momentum_correction=True, nesterov=False):
    return MomentumSGD(
        learning_rate=LinearWarmup(),
        momentum=MOMENTUM,
        nesterov=nesterov,
        velocity_form=velocity_form,
        momentum_correction=momentum_correction,
        l2_weight_decay=LAMBDA,
    )


def _rel_err(actual, expected):
    return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


@pytest.mark.parametrize("velocity_form", ["unscaled", "scaled"])
def test_matches_equation_9_under_warmup(velocity_form):
    expected = _reference_eq9(_warmup_rates())
    actual = _run_keras(_make(velocity_form))
    assert _rel_err(actual, expected) < 1e-5


def test_scaled_without_correction_differs_from_equation_9():
    expected = _reference_eq9(_warmup_rates())
    actual = _run_keras(_make("scaled", momentum_correction=False))
    assert _rel_err(actual, expected) > 1e-2


@pytest.mark.parametrize("velocity_form", ["unscaled", "scaled"])
def test_nesterov_matches_reference(velocity_form):
    expected = _reference_eq9(_warmup_rates(), nesterov=True)
    actual = _run_keras(_make(velocity_form, nesterov=True))
    assert _rel_err(actual, expected) < 1e-5


def test_nesterov_forms_agree_with_each_other():
    unscaled = _run_keras(_make("unscaled", nesterov=True))
    scaled = _run_keras(_make("scaled", nesterov=True))
    assert _rel_err(scaled, unscaled) < 1e-5


def test_correction_tracks_an_assigned_rate():
    """A float rate changed by assignment between steps is corrected too."""
    rates = [0.1, 0.4, 0.4, 1.6, 0.2]
    results = {}
    for form in ("unscaled", "scaled"):
        opt = MomentumSGD(0.1, velocity_form=form, l2_weight_decay=LAMBDA)
        kernel = _new_kernel()
        for eta in rates:
            opt.learning_rate = eta
            grad = _quadratic_grad(kernel.numpy().reshape(-1))
            opt.apply_gradients(
                [(tf.constant(grad.reshape(2, 2), tf.float32), kernel)])
        results[form] = kernel.numpy().reshape(-1).astype(np.float64)
    expected = _reference_eq9(rates)
    assert _rel_err(results["unscaled"], expected) < 1e-5
    assert _rel_err(results["scaled"], expected) < 1e-5


def test_momentum_correction_factor():
    assert float(optimizers.momentum_correction_factor(0.4, 0.1)) == (
        pytest.approx(4.0))
    assert float(optimizers.momentum_correction_factor(0.4, 0.0)) == 1.0


@pytest.mark.parametrize("decay_bias", [False, True])
def test_weight_decay_only_on_kernels(decay_bias):
    # 2-D, so that only the names decide (a GRU's bias and the gamma/beta
    # of a LayerNormalization over two axes are 2-D).
    names = ["kernel", "bias", "gamma", "beta"]
    variables = [keras.Variable(np.full((2, 3), 2.0, np.float32), name=n)
                 for n in names]
    opt = MomentumSGD(0.5, l2_weight_decay=0.1, decay_bias=decay_bias)
    opt.apply_gradients([(tf.zeros((2, 3)), v) for v in variables])
    moved = {v.name: not np.allclose(v.numpy(), 2.0) for v in variables}
    assert moved == {"kernel": True, "bias": decay_bias,
                     "gamma": False, "beta": False}
    # Zero gradient: w <- w - eta * lambda * w.
    np.testing.assert_allclose(variables[0].numpy(), 2.0 - 0.5 * 0.1 * 2.0,
                               rtol=1e-6)


def test_decays_variable_on_keras_layers():
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    bn = keras.layers.BatchNormalization()
    bn.build((None, 3))
    decided = {v.name: optimizers.decays_variable(v, decay_bias=False)
               for v in dense.weights + bn.weights}
    assert decided == {"kernel": True, "bias": False, "gamma": False,
                       "beta": False, "moving_mean": False,
                       "moving_variance": False}
    assert optimizers.decays_variable(dense.bias, decay_bias=True)


# --- the default decay rule on every kind of Keras variable (R7) ------------

# (layer, variable) -> what the default rule does: "decay", "bias" (as
# decay_bias says) or "never".
_EXPECTED_DECAY = {
    ("conv", "kernel"): "decay", ("conv", "bias"): "bias",
    ("depthwise", "kernel"): "decay", ("depthwise", "bias"): "bias",
    ("separable", "depthwise_kernel"): "decay",
    ("separable", "pointwise_kernel"): "decay",
    ("separable", "bias"): "bias",
    ("batch_norm", "gamma"): "never", ("batch_norm", "beta"): "never",
    ("batch_norm", "moving_mean"): "never",
    ("batch_norm", "moving_variance"): "never",
    ("worker_bn", "gamma"): "never", ("worker_bn", "beta"): "never",
    ("worker_bn", "moving_mean"): "never",
    ("worker_bn", "moving_variance"): "never",
    ("group_norm", "gamma"): "never", ("group_norm", "beta"): "never",
    ("prelu", "alpha"): "never",  # 3-D, one slope per activation.
    ("layer_norm", "gamma"): "never",  # 2-D: normalised over two axes.
    ("layer_norm", "beta"): "never",
    ("lstm/lstm_cell", "kernel"): "decay",
    ("lstm/lstm_cell", "recurrent_kernel"): "decay",
    ("lstm/lstm_cell", "bias"): "bias",
    ("gru/gru_cell", "kernel"): "decay",
    ("gru/gru_cell", "recurrent_kernel"): "decay",
    ("gru/gru_cell", "bias"): "bias",  # 2-D (reset_after).
    ("attention/query", "kernel"): "decay",  # 3-D EinsumDense kernels,
    ("attention/query", "bias"): "bias",  # 2-D biases.
    ("attention/key", "kernel"): "decay", ("attention/key", "bias"): "bias",
    ("attention/value", "kernel"): "decay",
    ("attention/value", "bias"): "bias",
    ("attention/attention_output", "kernel"): "decay",
    ("attention/attention_output", "bias"): "bias",
    ("rms_norm", "scale"): "never",
    ("dense", "kernel"): "decay", ("dense", "bias"): "bias",
    ("embedding", "embeddings"): "decay",
}


def _every_kind_of_variable():
    """A model with one layer of each kind of _EXPECTED_DECAY."""
    layers = keras.layers
    images = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, name="conv")(images)
    x = layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = layers.SeparableConv2D(4, 1, name="separable")(x)
    x = layers.BatchNormalization(name="batch_norm")(x)
    x = WorkerBatchNorm(name="worker_bn")(x)
    x = layers.GroupNormalization(2, name="group_norm")(x)
    x = layers.PReLU(name="prelu")(x)
    x = layers.Reshape((16, 4))(x)
    x = layers.LayerNormalization(axis=[-2, -1], name="layer_norm")(x)
    x = layers.LSTM(3, return_sequences=True, name="lstm")(x)
    x = layers.GRU(3, return_sequences=True, name="gru")(x)
    x = layers.MultiHeadAttention(2, 2, name="attention")(x, x)
    x = layers.RMSNormalization(name="rms_norm")(x)
    tokens = keras.Input((5,), dtype="int32")
    embedded = layers.Embedding(10, 3, name="embedding")(tokens)
    x = layers.Concatenate(axis=1)([x, embedded])
    logits = layers.Dense(2, name="dense")(layers.Flatten()(x))
    return keras.Model([images, tokens], logits)


def _expected_decays(decay_bias):
    return {f"{layer}/{name}": kind == "decay" or (kind == "bias" and decay_bias)
            for (layer, name), kind in _EXPECTED_DECAY.items()}


@pytest.mark.parametrize("decay_bias", [False, True])
def test_default_rule_on_every_kind_of_variable(decay_bias):
    model = _every_kind_of_variable()
    decided = {v.path: optimizers.decays_variable(v, decay_bias)
               for v in model.weights}
    assert decided == _expected_decays(decay_bias)


def _moved_by_decay_alone(optimizer, model):
    """Paths of the variables one zero-gradient step moves (decay only)."""
    before = [v.numpy() for v in model.trainable_variables]
    optimizer.apply_gradients(
        [(tf.zeros(v.shape), v) for v in model.trainable_variables])
    return {v.path for v, b in zip(model.trainable_variables, before)
            if not np.array_equal(v.numpy(), b)}


def test_optimizer_decays_what_the_rule_says():
    model = _every_kind_of_variable()
    moved = _moved_by_decay_alone(MomentumSGD(0.5, l2_weight_decay=0.1), model)
    assert moved == {path for path, decays in _expected_decays(False).items()
                     if decays}


@keras.saving.register_keras_serializable(package="test_optimizers")
@gin.configurable
def decay_only_embeddings(variable):
    """A user's rule: decay the embedding matrices, nothing else."""
    return variable.name == "embeddings"


def test_decay_rule_overrides_the_default_in_python():
    model = _every_kind_of_variable()
    opt = MomentumSGD(0.5, l2_weight_decay=0.1,
                      decay_rule=lambda v: v.name.endswith("kernel"))
    moved = _moved_by_decay_alone(opt, model)
    assert moved == {path for path in _expected_decays(False)
                     if path.endswith("kernel") and "norm" not in path}
    assert len(moved) == 13


def test_decay_rule_from_gin_saves_and_loads():
    gin.parse_config(
        "optimizers.MomentumSGD.decay_rule = @decay_only_embeddings")
    opt = MomentumSGD(learning_rate=0.5, l2_weight_decay=0.1)
    assert _moved_by_decay_alone(opt, _every_kind_of_variable()) == {
        "embedding/embeddings"}
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert clone.decay_rule is decay_only_embeddings
    assert clone.get_config() == opt.get_config()


def _kernel_only(variable):
    return variable.name == "kernel"


@pytest.mark.parametrize("kwargs, error, named", [
    ({"decay_rule": "kernel"}, TypeError, "'kernel'"),
    ({"decay_rule": _kernel_only, "decay_bias": True}, ValueError,
     "_kernel_only"),
])
def test_bad_decay_rule_is_refused(kwargs, error, named):
    with pytest.raises(error, match=named):
        MomentumSGD(0.1, **kwargs)


def test_decay_rule_must_answer_a_bool():
    kernel = _new_kernel()
    opt = MomentumSGD(0.1, decay_rule=lambda v: tf.constant(True))
    with pytest.raises(TypeError, match="'kernel'.* must return True or False"):
        opt.build([kernel])


@pytest.mark.parametrize("build", [
    lambda: resnet_cifar(input_shape=(8, 8, 1), depth=8, width=4),
    lambda: resnet_imagenet(input_shape=(32, 32, 3), num_classes=10, depth=50),
], ids=["resnet_cifar", "resnet_imagenet"])
def test_paper_resnets_decay_their_conv_and_dense_kernels(build):
    model = build()
    kernels = {layer.kernel.path for layer in model._flatten_layers()  # pylint: disable=protected-access
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))}
    decayed = {v.path for v in model.trainable_variables
               if optimizers.decays_variable(v)}
    assert decayed == kernels
    # The rule of the paper's runs so far: exactly the variables named kernel.
    assert decayed == {v.path for v in model.trainable_variables
                       if v.name == "kernel"}
    assert any(v.name in ("gamma", "bias") for v in model.trainable_variables)


# --- replica count (R8 with the optimiser): k replicas == 1 device -----------

_BATCH = 8
_DIM = 3


def _batch():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.5, (_BATCH, _DIM)).astype(np.float32)
    y = rng.normal(0.0, 1.0, (_BATCH,)).astype(np.float32)
    return x, y


def _new_params():
    return [
        keras.Variable(np.array([[0.5], [-0.3], [0.8]], np.float32),
                       name="kernel"),
        keras.Variable(np.array([0.2], np.float32), name="bias"),
        keras.Variable(np.array([1.5], np.float32), name="gamma"),
    ]


def _per_example_loss(params, x, y):
    kernel, bias, gamma = params
    pred = gamma * (tf.matmul(x, kernel) + bias)
    return 0.5 * tf.square(pred[:, 0] - y)


def _replica_opt():
    return MomentumSGD(LinearWarmup(), velocity_form="scaled",
                       l2_weight_decay=LAMBDA, decay_bias=True)


def _single_device_result(steps):
    x, y = _batch()
    params = _new_params()
    opt = _replica_opt()
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(_per_example_loss(params, x, y))
        grads = tape.gradient(loss, [p.value for p in params])
        opt.apply_gradients(zip(grads, params))
    return [p.numpy() for p in params]


def _replicated_result(num_replicas, steps):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    # Collective all-reduce keys restart at 1 for every new MirroredStrategy,
    # so a 4-device strategy after a 2-device one in the same process fails
    # ("joining a group with size 4, but that group has size 2", see
    # tensorflow/tensorflow#61314). ReductionToOneDevice uses no collectives.
    strategy = tf.distribute.MirroredStrategy(
        devices[:num_replicas],
        cross_device_ops=tf.distribute.ReductionToOneDevice())
    x, y = _batch()
    shard = _BATCH // num_replicas
    with strategy.scope():
        params = _new_params()
        opt = _replica_opt()
        opt.build(params)  # slots cannot be created in a replica context.

    def shard_of(array):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: array[ctx.replica_id_in_sync_group * shard:
                              (ctx.replica_id_in_sync_group + 1) * shard])

    x_shards, y_shards = shard_of(x), shard_of(y)

    def replica_step(xs, ys):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(_per_example_loss(params, xs, ys)) / _BATCH
        grads = tape.gradient(loss, [p.value for p in params])
        opt.apply_gradients(zip(grads, params))

    @tf.function
    def step():
        strategy.run(replica_step, args=(x_shards, y_shards))

    for _ in range(steps):
        step()
    return [p.numpy() for p in params]


@pytest.mark.parametrize("num_replicas", [2, 4])
def test_replicas_match_single_device(num_replicas):
    steps = 4
    expected = _single_device_result(steps)
    actual = _replicated_result(num_replicas, steps)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
    # The parameters moved, so the comparison is not vacuous.
    assert not np.allclose(expected[0], _new_params()[0].numpy())


# --- loss scaling, config, arguments ---------------------------------------

def test_loss_scale_optimizer_wraps_momentum_sgd():
    plain = MomentumSGD(0.1, velocity_form="scaled")
    wrapped = keras.optimizers.LossScaleOptimizer(
        MomentumSGD(0.1, velocity_form="scaled"))
    results, kernels = [], []
    for opt in (plain, wrapped):
        kernel = keras.Variable(_W0.astype(np.float32), name="kernel")
        kernels.append(kernel)
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = 0.5 * tf.reduce_sum(
                    tf.constant(_A, tf.float32)
                    * tf.square(kernel - tf.constant(_TARGET, tf.float32)))
                loss = opt.scale_loss(loss)
            grad = tape.gradient(loss, kernel.value)
            opt.apply_gradients([(grad, kernel)])
        results.append(kernel.numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5)
    # A non-finite gradient is skipped: nothing moves.
    wrapped_kernel = kernels[1]
    wrapped.apply_gradients([(tf.fill((4,), np.inf), wrapped_kernel)])
    np.testing.assert_array_equal(wrapped_kernel.numpy(), results[1])


def test_get_config_round_trip():
    opt = MomentumSGD(learning_rate=0.2, momentum=0.8, nesterov=True,
                      velocity_form="scaled", momentum_correction=False,
                      l2_weight_decay=5e-4, decay_bias=True, clipnorm=1.0,
                      name="sgd_x")
    config = opt.get_config()
    clone = MomentumSGD.from_config(config)
    assert clone.get_config() == config
    assert config["velocity_form"] == "scaled"
    assert config["momentum_correction"] is False
    assert config["clipnorm"] == 1.0
    assert config["weight_decay"] is None


@pytest.mark.parametrize("kwargs, named", [
    ({"velocity_form": "caffe2"}, "caffe2"),
    ({"momentum": 1.0}, "1.0"),
    ({"momentum": -0.1}, "-0.1"),
    ({"l2_weight_decay": -1e-4}, "-0.0001"),
    ({"weight_decay": 1e-4}, "0.0001"),
])
def test_bad_arguments_raise_naming_the_value(kwargs, named):
    with pytest.raises(ValueError, match=named):
        MomentumSGD(**kwargs)


def test_momentum_sgd_is_gin_configurable():
    gin.parse_config("""
        optimizers.MomentumSGD.velocity_form = 'scaled'
        optimizers.MomentumSGD.nesterov = True
        optimizers.MomentumSGD.l2_weight_decay = 5e-5
    """)
    opt = MomentumSGD(learning_rate=0.4, nesterov=False)
    assert (opt.velocity_form, opt.nesterov, opt.l2_weight_decay) == (
        "scaled", False, 5e-5)  # An argument given in Python wins.
    assert opt.momentum == 0.9 and opt.momentum_correction


@pytest.mark.parametrize("name", ["learning_rate", "aggregate_gradients"])
def test_the_training_loop_settings_are_not_gin_bindable(name):
    """The schedule gives the rate and the loop decides the all-reduce."""
    with pytest.raises(ValueError, match=name):
        gin.parse_config(f"optimizers.MomentumSGD.{name} = 0.5")
