"""Exports a trained Keras model as a SavedModel for serving (TF Serving).

`export_saved_model(model, model_dir/export, step)` writes the inference model
(`training=False`) to `model_dir/export/<step>/`, the versioned layout that
TensorFlow Serving watches. Its one signature, `serving_default`, takes
`images`: float32 [batch, *the model's input shape], the preprocessed images
the model takes (e.g. `fashion_mnist.normalize`'s output), and returns
`logits` and `probabilities` (their softmax), both float32 whatever the
model's dtype policy (`mixed_float16` and `mixed_bfloat16` compute in 16
bits). Load it with `tf.saved_model.load(path).signatures['serving_default']`;
no tf_lbsgd code is needed to run it.

Distributed models. A model built under a `tf.distribute` strategy is saved
as one plain model (distributed variables become single variables, with no
device). `WorkerBatchNorm`'s moving statistics, which each replica keeps and
updates apart (R9), are saved as their average over the replicas: exactly
what a checkpoint of this step holds and what `--mode=eval` scores, with or
without `layers.ReplicaStatistics.sync()` beforehand. Reading that average
is a collective under `MultiWorkerMirroredStrategy`, so every worker must
call `export_saved_model` at the same point, the chief with `write=True` and
the others with `write=False` (they save to a local temporary directory and
delete it, as in TensorFlow's multi-worker saving guide).

Atomicity. The SavedModel (and `export_info.json`, which describes it) is
written to a hidden temporary sibling directory, then renamed into place: a
crash never leaves a partial export at the final path (at worst a hidden
`.<name>.tmp-*` directory, which TF Serving ignores and which may be deleted).
An existing export of the same step is replaced, not merged into. Renaming a
directory is atomic on local and POSIX file systems, not on object stores.
"""

import json
import os
import shutil
import tempfile
import uuid

import tensorflow as tf

SIGNATURE = "serving_default"
INPUT = "images"
OUTPUTS = ("logits", "probabilities")
INFO_FILE = "export_info.json"


def input_shape(model):
    """The shape of one example the model takes, without the batch dimension.

    Args:
        model: a Keras model: functional or Sequential with a defined input,
            or a subclassed model already built or called on a batch.

    Returns:
        A tuple such as (28, 28, 1) (None for a dimension of any size).

    Raises:
        ValueError: naming the model if its input shape is not defined yet
            (a subclassed model never built nor called), or if it takes more
            than one input.
    """
    inputs = _symbolic(model, "inputs")
    if inputs is not None:
        if len(inputs) != 1:
            raise ValueError(
                f"Model {model.name!r} takes {len(inputs)} inputs; the serving "
                f"signature takes one tensor of images")
        return tuple(inputs[0].shape[1:])
    # A subclassed model keeps the shapes it was built or first called with.
    shapes = getattr(model, "_build_shapes_dict", None) or {}  # pylint: disable=protected-access
    if len(shapes) == 1:
        (shape,) = shapes.values()
        if shape and not isinstance(shape[0], (list, tuple)):
            return tuple(shape[1:])
    raise ValueError(
        f"Model {model.name!r} has no defined input shape, so its serving "
        f"signature cannot be written; build or call the model first (e.g. "
        f"model(images) on a batch of images, or model.build((None, *shape)))"
        f", or define it with keras.Input")


def _symbolic(model, attribute):
    """`model.inputs` or `model.outputs` of a functional or Sequential model,
    else None (a subclassed model, or a Sequential model never built)."""
    try:
        return getattr(model, attribute) or None
    except AttributeError:
        return None


def _serving_module(model, shape):
    """A tf.Module holding `model` and its serving function."""
    module = tf.Module()
    module.model = model

    @tf.function(input_signature=[
        tf.TensorSpec([None, *shape], tf.float32, name=INPUT)])
    def serve(images):
        logits = model(images, training=False)
        if not tf.is_tensor(logits):
            raise ValueError(
                f"Model {model.name!r} returns {type(logits).__name__}; the "
                f"serving signature needs one tensor of logits")
        logits = tf.cast(logits, tf.float32)
        return {OUTPUTS[0]: logits, OUTPUTS[1]: tf.nn.softmax(logits)}

    module.serve = serve
    return module


def _check_step(step):
    """Returns `step` as an int, or raises ValueError."""
    try:
        value = int(step)
    except (TypeError, ValueError):
        value = None
    if isinstance(step, bool) or value is None or value != step or value < 0:
        raise ValueError(f"step must be a non-negative integer (the "
                         f"version TF Serving reads), got {step!r}")
    return value


def _export_info(model, shape, step):
    """What `export_info.json` says about the export."""
    outputs = _symbolic(model, "outputs")
    return {
        "step": step,
        "model": model.name,
        "signature": SIGNATURE,
        "input": {"name": INPUT, "dtype": "float32",
                  "shape": [None, *shape]},
        "outputs": list(OUTPUTS),
        "num_classes": (outputs[0].shape[-1]
                        if outputs and len(outputs) == 1 else None),
        "dtype_policy": model.dtype_policy.name,
    }


def _save(model, shape, path, step):
    """Writes the SavedModel and its export_info.json to `path`."""
    module = _serving_module(model, shape)
    tf.saved_model.save(module, path, signatures={SIGNATURE: module.serve})
    with tf.io.gfile.GFile(os.path.join(path, INFO_FILE), "w") as f:
        json.dump(_export_info(model, shape, step), f, indent=2)


def _replace(source, target):
    """Renames directory `source` to `target`, replacing what is there."""
    if not tf.io.gfile.exists(target):
        tf.io.gfile.rename(source, target)
        return
    parent, name = os.path.split(target)
    aside = os.path.join(parent, f".{name}.old-{uuid.uuid4().hex}")
    tf.io.gfile.rename(target, aside)
    tf.io.gfile.rename(source, target)
    tf.io.gfile.rmtree(aside)


def export_saved_model(model, export_dir, step=None, write=True):
    """Exports `model` for inference as a SavedModel, atomically.

    Args:
        model: a built Keras model mapping a batch of images to logits
            [batch, num_classes], possibly built under a `tf.distribute`
            strategy and a mixed-precision dtype policy.
        export_dir: where to export, e.g. `model_dir/export`.
        step: the global step: the SavedModel goes to `export_dir/<step>/`
            (TF Serving's version directory); None writes to `export_dir`
            itself.
        write: False on the non-chief workers of a multi-worker run: they
            save to a local temporary directory (taking part in the
            collective reads) and delete it.

    Returns:
        The directory written, or None if `write` is False.

    Raises:
        ValueError: if the model's input shape is not defined (a subclassed
            model never built nor called), it takes several inputs or does
            not return one tensor, or `step` is not a non-negative integer.
    """
    shape = input_shape(model)
    if step is not None:
        step = _check_step(step)
    if not write:
        scratch = tempfile.mkdtemp(prefix="tf_lbsgd_export_")
        try:
            _save(model, shape, scratch, step)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None
    path = export_dir if step is None else os.path.join(export_dir, str(step))
    path = path.rstrip("/") or path
    parent, name = os.path.split(path)
    tf.io.gfile.makedirs(parent or ".")
    temporary = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex}")
    try:
        _save(model, shape, temporary, step)
        _replace(temporary, path)
    finally:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.rmtree(temporary)
    return path
