"""The serving export: what a fresh process loads scores as the model does.

The export of a 2-replica model with per-replica BN statistics that differ
is loaded by a separate Python process (plain TensorFlow, no tf_lbsgd) and
run on real Fashion-MNIST test images; its logits and probabilities must be
those of the model in this process. Mixed-precision models serve float32;
a re-export of a step replaces the old one and leaves no temporary
directory; a model without an input shape is refused with a clear error.
"""

import json
import os
import subprocess
import sys
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import distribute
from tf_lbsgd import export
from tf_lbsgd import precision
from tf_lbsgd.data import fashion_mnist
from tf_lbsgd.models import layers

# Imports plain TensorFlow, then reads a line [export path, images .npy,
# outputs .npz], loads the export and runs its serving signature.
LOAD_AND_SERVE = """
import json, sys
import numpy as np
import tensorflow as tf
path, images_file, outputs_file = json.loads(sys.stdin.readline())
serve = tf.saved_model.load(path).signatures["serving_default"]
outputs = serve(images=tf.constant(np.load(images_file)))
np.savez(outputs_file, **{k: v.numpy() for k, v in outputs.items()})
spec = serve.structured_input_signature[1]["images"]
print(json.dumps({"input": [spec.dtype.name, spec.shape.as_list()],
                  "outputs": {k: v.dtype.name for k, v in outputs.items()}}))
"""


@pytest.fixture(scope="module")
def test_images():
    """The first 192 Fashion-MNIST test images, normalised: float32."""
    images, _ = fashion_mnist.load_fashion_mnist(split="test")
    return fashion_mnist.normalize(images[:192]).numpy()


def _small_cnn():
    """Two conv + per-worker BN stages and a classifier: fast to trace."""
    x = inputs = keras.Input((28, 28, 1))
    for filters in (4, 8):
        x = keras.layers.Conv2D(filters, 3, strides=2)(x)
        x = keras.layers.ReLU()(layers.WorkerBatchNorm()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="small_cnn")


@pytest.fixture
def fresh_process():
    """A new Python process running LOAD_AND_SERVE, started before the test
    body so that its TensorFlow import overlaps the model's training."""
    process = subprocess.Popen(
        [sys.executable, "-c", LOAD_AND_SERVE], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


def _serve_in(process, path, images, tmp_path):
    """Has `process` serve `images` from the export at `path`."""
    np.save(tmp_path / "images.npy", images)
    request = [path, str(tmp_path / "images.npy"),
               str(tmp_path / "outputs.npz")]
    stdout, stderr = process.communicate(json.dumps(request) + "\n",
                                         timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.splitlines()[-1]), np.load(request[2])


def test_fresh_process_serves_the_two_replica_model(test_images, tmp_path,
                                                    fresh_process):
    strategy = distribute.logical_cpu_strategy(2)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = _small_cnn()
    # Two training-mode passes: each replica updates its own copy of the BN
    # moving statistics from its own 64 images (R9), so the copies differ.
    batches = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(test_images[64:]).batch(128))
    forward = tf.function(lambda batch: strategy.run(
        lambda x: model(x, training=True), args=(batch,)))
    for _ in range(2):
        for batch in batches:
            forward(batch)
    for bn in model.layers:
        if isinstance(bn, layers.WorkerBatchNorm):
            copies = strategy.experimental_local_results(bn.moving_mean.value)
            assert not np.allclose(copies[0], copies[1], rtol=0, atol=1e-4)

    path = export.export_saved_model(model, str(tmp_path / "export"), step=7)

    assert path == str(tmp_path / "export" / "7")
    assert sorted(os.listdir(tmp_path / "export")) == ["7"]
    with open(os.path.join(path, export.INFO_FILE), encoding="utf-8") as f:
        info = json.load(f)
    assert info["step"] == 7 and info["num_classes"] == 10
    assert info["input"]["shape"] == [None, 28, 28, 1]
    signature, served = _serve_in(fresh_process, path, test_images[:64],
                                  tmp_path)
    assert signature == {
        "input": ["float32", [None, 28, 28, 1]],
        "outputs": {"logits": "float32", "probabilities": "float32"}}
    # Read outside the replicas, the moving statistics are their average:
    # what a checkpoint saves and `--mode=eval` scores (after sync()).
    logits = model(test_images[:64], training=False).numpy()
    # Measured: identical here (0.0); 1.9e-9 for a ResNet-8 of width 4.
    np.testing.assert_allclose(served["logits"], logits, rtol=0, atol=1e-5)
    np.testing.assert_allclose(served["probabilities"],
                               tf.nn.softmax(logits).numpy(), rtol=0,
                               atol=1e-6)


def test_mixed_bfloat16_model_serves_float32(test_images, tmp_path):
    with precision.dtype_policy("mixed_bfloat16"):
        keras.utils.set_random_seed(0)
        model = _small_cnn()
    images = test_images[:16]
    logits = model(images, training=False)
    assert logits.dtype == tf.bfloat16  # The export must cast.

    path = export.export_saved_model(model, str(tmp_path / "bf16"))

    assert path == str(tmp_path / "bf16")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    outputs = serve(images=tf.constant(images))
    assert {k: v.dtype for k, v in outputs.items()} == {
        "logits": tf.float32, "probabilities": tf.float32}
    np.testing.assert_array_equal(outputs["logits"].numpy(),
                                  tf.cast(logits, tf.float32).numpy())
    np.testing.assert_allclose(outputs["probabilities"].numpy().sum(-1), 1.0,
                               rtol=1e-6)
    with open(os.path.join(path, export.INFO_FILE), encoding="utf-8") as f:
        assert json.load(f)["dtype_policy"] == "mixed_bfloat16"


def test_reexport_of_a_step_replaces_it(test_images, tmp_path, monkeypatch):
    keras.utils.set_random_seed(0)
    model = _small_cnn()
    export_dir = str(tmp_path / "export")
    first = export.export_saved_model(model, export_dir, step=3)
    with open(os.path.join(first, "stale.txt"), "w", encoding="utf-8") as f:
        f.write("left by the first export")
    bias = model.layers[-1].bias
    bias.assign(bias + 1.0)

    second = export.export_saved_model(model, export_dir, step=3)

    assert second == first
    assert not os.path.exists(os.path.join(second, "stale.txt"))
    assert sorted(os.listdir(export_dir)) == ["3"]  # No temporary left.
    serve = tf.saved_model.load(second).signatures["serving_default"]
    images = test_images[:8]
    np.testing.assert_allclose(serve(images=tf.constant(images))["logits"],
                               model(images, training=False), rtol=0,
                               atol=1e-6)
    # A non-chief worker's export (write=False) keeps nothing.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert export.export_saved_model(model, export_dir, 4, write=False) is None
    assert sorted(os.listdir(export_dir)) == ["3"]
    assert not os.listdir(scratch)


def test_subclassed_model_is_refused_until_called(test_images, tmp_path):
    class Classifier(keras.Model):

        def __init__(self):
            super().__init__(name="subclassed")
            self.dense = keras.layers.Dense(10)

        def call(self, inputs, training=None):
            return self.dense(keras.ops.reshape(inputs, (-1, 784)))

    model = Classifier()
    with pytest.raises(ValueError, match=r"'subclassed' has no defined "
                       r"input shape.*build or call the model first"):
        export.export_saved_model(model, str(tmp_path / "export"))
    assert not os.path.exists(tmp_path / "export")
    images = test_images[:4]
    logits = model(images)  # Now it has the shape it was called with.

    path = export.export_saved_model(model, str(tmp_path / "export"))

    serve = tf.saved_model.load(path).signatures["serving_default"]
    assert serve.structured_input_signature[1]["images"].shape.as_list() == [
        None, 28, 28, 1]
    np.testing.assert_allclose(serve(images=tf.constant(images))["logits"],
                               logits, rtol=0, atol=1e-6)


def test_step_must_be_a_non_negative_integer(tmp_path):
    with pytest.raises(ValueError, match=r"step must be a non-negative "
                       r"integer .* got -1"):
        export.export_saved_model(_small_cnn(), str(tmp_path), step=-1)
