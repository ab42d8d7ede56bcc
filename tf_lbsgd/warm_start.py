"""Warm start: a new run's model starts from another run's checkpoint.

This is the usual fine-tuning / warm start of the TensorFlow Model Garden
(`init_checkpoint`, with `init_checkpoint_modules` 'all' or 'backbone', in
`official/vision/tasks/image_classification.py`): the new run builds its model,
copies in the weights of a checkpoint, and trains from step 0 with a fresh
optimizer. Only the model's variables are read, including the moving
statistics of batch normalisation; the checkpoint's optimizer slots, step and
timers are left aside.

The checkpoints are those runs save: `tf.train.Checkpoint(model=...,
optimizer=..., global_step=...)`. A variable is found in one by its object
path below `model` (e.g. `model/_operations/30/_kernel`), the way
`tf.train.Checkpoint(model=model).read(path)` matches them: a variable reached
through the optimizer too is saved once, under a key of whichever path TF
named it by, and the checkpoint's object graph (`_CHECKPOINTABLE_OBJECT_GRAPH`)
gives that key. Every value is read and checked before any is assigned, so a
refused checkpoint leaves the model as it was.

Under a `tf.distribute` strategy the variables are assigned in the
cross-replica context, which sets every replica's copy (mirrored weights and
the on-read moving statistics of `WorkerBatchNorm` alike).
"""

import collections
import dataclasses
import os

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from tf_lbsgd import checkpoints

# Where a run's checkpoint keeps the model (`tf.train.Checkpoint(model=...)`).
MODEL_KEY = "model"
# The tensor holding an object-based checkpoint's object graph, and the name
# of a variable's value among a node's attributes.
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_VALUE_ATTRIBUTE = "VARIABLE_VALUE"
# What reading a damaged checkpoint raises (as in checkpoints.py): OpError
# (DataLossError for a checksum mismatch, NotFoundError for a missing file)
# or, for a truncated file, IndexError.
_READ_ERRORS = (tf.errors.OpError, IndexError, OSError)
# Mismatching variables named in an error message.
_SHOWN_PROBLEMS = 5


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """What `initialize_from_checkpoint` did.

    Attributes:
        path: the checkpoint prefix the weights came from.
        restored: names (`variable.path`) of the variables given the
            checkpoint's values.
        skipped: names of the variables left at their initial values (the
            classifier's, with `skip_classifier=True`).
    """

    path: str
    restored: tuple
    skipped: tuple

    def __str__(self):
        text = (f"initialized {len(self.restored)} model variables from "
                f"{self.path}")
        if self.skipped:
            text += (f"; kept the initial values of {len(self.skipped)} "
                     f"(the classifier): {', '.join(self.skipped)}")
        return text


def resolve_checkpoint(path):
    """The checkpoint prefix that `path` names.

    Args:
        path: a checkpoint prefix (e.g. `model_dir/ckpt-120`), taken as it
            is (`initialize_from_checkpoint` reads only the model's tensors
            and refuses it if one of those is unreadable), or a run's
            model_dir, whose newest intact checkpoint is taken (see
            `checkpoints.newest_intact_checkpoint`: every tensor is read;
            damaged checkpoints are skipped with a warning).

    Returns:
        The checkpoint prefix.

    Raises:
        FileNotFoundError: naming `path` and what was looked for, if it is
            neither a directory with an intact checkpoint nor a prefix whose
            `.index` file exists.
    """
    path = os.fspath(path)
    if tf.io.gfile.isdir(path):
        found, skipped = checkpoints.newest_intact_checkpoint(path)
        if found is None:
            damaged = (f" ({len(skipped)} listed, all damaged)"
                       if skipped else "")
            raise FileNotFoundError(
                f"init checkpoint: the directory {path} has no intact "
                f"checkpoint: looked for the checkpoints its "
                f"'{checkpoints.STATE_FILE}' file lists{damaged}. Give a "
                f"run's model_dir that has one, or a checkpoint prefix "
                f"(model_dir/ckpt-<step>)")
        return found
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(
            f"init checkpoint: {path} is neither a directory nor a checkpoint "
            f"prefix (there is no file {path}.index)")
    return path


def classifier_variables(model):
    """The variables of `model`'s classifier.

    The classifier is the last layer of `model.layers` that owns variables.
    In a functional model the layers are listed in topological order, so it
    is the weighted layer nearest the output: the final `Dense` ("classifier")
    of `resnet_cifar` and `resnet_imagenet`, whose kernel and bias depend on
    the number of classes. In a Sequential or subclassed model it is the last
    layer with variables in the order the layers were added.

    Args:
        model: a built Keras model.

    Returns:
        That layer's variables (an empty list if no layer has any).
    """
    weighted = [layer for layer in model.layers if layer.variables]
    return list(weighted[-1].variables) if weighted else []


def _name(variable):
    return getattr(variable, "path", None) or variable.name


def _object_paths(model):
    """{id(object): path of child names from `model`} over its object graph.

    Breadth first, as TF's checkpointing walks it: each object gets its
    first (shortest) path.
    """
    view = tf.train.TrackableView(model)
    paths = {id(model): ()}
    queue = collections.deque([model])
    while queue:
        parent = queue.popleft()
        for name, child in view.children(parent).items():
            if id(child) not in paths:
                paths[id(child)] = paths[id(parent)] + (name,)
                queue.append(child)
    return paths


def _error_text(error):
    """`Type: first line` of an error (TF's run over many lines)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _read(reader, key, path):
    """The tensor `key` of checkpoint `path`; ValueError if unreadable."""
    try:
        return reader.get_tensor(key)
    except _READ_ERRORS as error:
        raise ValueError(
            f"init checkpoint: tensor {key!r} of {path} cannot be read "
            f"({_error_text(error)}); give another checkpoint "
            f"(or its model_dir: its newest intact one is taken)") from error


def _object_graph(reader, path):
    """The `TrackableObjectGraph` proto saved in checkpoint `path`."""
    if not reader.has_tensor(_OBJECT_GRAPH_KEY):
        raise ValueError(
            f"init checkpoint: {path} is not an object-based checkpoint "
            f"(tf.train.Checkpoint); it has no {_OBJECT_GRAPH_KEY}")
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(_read(reader, _OBJECT_GRAPH_KEY, path))
    return graph


def _checkpoint_key(graph, object_path):
    """The key of the value saved at `object_path`, or None if absent."""
    node = graph.nodes[0]
    for name in object_path:
        children = {child.local_name: child.node_id
                    for child in node.children}
        if name not in children:
            return None
        node = graph.nodes[children[name]]
    for attribute in node.attributes:
        if attribute.name == _VALUE_ATTRIBUTE:
            return attribute.checkpoint_key
    return None


def _problem(variable, key, reader):
    """Why the checkpoint's value at `key` cannot go into `variable`, or
    None."""
    shape = tuple(variable.shape)
    if key is None or not reader.has_tensor(key):
        return f"{_name(variable)} (shape {shape}) has no value in it"
    saved_shape = tuple(reader.get_variable_to_shape_map()[key])
    if saved_shape != shape:
        return (f"{_name(variable)} has shape {saved_shape} in it but "
                f"{shape} in this model")
    saved_dtype = reader.get_variable_to_dtype_map()[key]
    if saved_dtype != tf.as_dtype(variable.dtype):
        return (f"{_name(variable)} has dtype {saved_dtype.name} in it but "
                f"{tf.as_dtype(variable.dtype).name} in this model")
    return None


def _mismatch_error(problems, path, only_classifier):
    """The ValueError for `problems` (sentences from `_problem`); it
    suggests `skip_classifier` if `only_classifier` mismatches."""
    shown = "; ".join(problems[:_SHOWN_PROBLEMS])
    more = (f" (and {len(problems) - _SHOWN_PROBLEMS} more)"
            if len(problems) > _SHOWN_PROBLEMS else "")
    hint = ("set skip_classifier=True to keep this model's freshly "
            "initialised classifier (fine-tuning on a data set with another "
            "number of classes)" if only_classifier else
            "the checkpoint was written by a different model: build the "
            "model it was trained with")
    return ValueError(
        f"init checkpoint {path}: {len(problems)} variable(s) of this model "
        f"do not fit it: {shown}{more}. Nothing was assigned; {hint}")


def _checked_values(model, reader, path, skip_classifier):
    """`([(variable, its value in the checkpoint)], [names skipped])`.

    Raises:
        ValueError: from `_mismatch_error`, if a variable does not fit.
    """
    graph = _object_graph(reader, path)
    object_paths = _object_paths(model)
    classifier = {id(v) for v in classifier_variables(model)}
    values, skipped, problems, mismatching = [], [], [], set()
    for variable in model.variables:
        if skip_classifier and id(variable) in classifier:
            skipped.append(_name(variable))
            continue
        object_path = object_paths.get(id(variable))
        key = object_path and _checkpoint_key(graph,
                                              (MODEL_KEY,) + object_path)
        problem = _problem(variable, key, reader)
        if problem:
            problems.append(problem)
            mismatching.add(id(variable))
        else:
            values.append((variable, _read(reader, key, path)))
    if problems:
        raise _mismatch_error(problems, path,
                              bool(classifier) and mismatching <= classifier)
    return values, skipped


def initialize_from_checkpoint(model, path, skip_classifier=False):
    """Sets `model`'s weights to those of another run's checkpoint.

    Model Garden's fine-tuning / warm start (`init_checkpoint`): only the
    model's variables are read (weights and batch-norm moving statistics);
    the optimizer, its slots and the step are not, so the run starts at step
    0 with a fresh optimizer. Every model variable must have a value of the
    same shape and dtype in the checkpoint, found by its object path below
    `model` (see the module docstring); the checkpoint may hold more (the
    optimizer's). All are checked before any is assigned.

    Call it after building the model (and, under a `tf.distribute` strategy,
    in or out of its scope: the assignment sets every replica's copy) and
    before the first training step.

    Args:
        model: a built Keras model (functional, Sequential or subclassed).
        path: a checkpoint prefix or a run's model_dir (see
            `resolve_checkpoint`), written by `tf.train.Checkpoint(model=...)`.
        skip_classifier: keep the initial values of the classifier's
            variables (see `classifier_variables`), e.g. to fine-tune on a
            data set with another number of classes; they need not be in the
            checkpoint nor fit it.

    Returns:
        A `WarmStart` naming the checkpoint and the variables restored and
        skipped; `str()` of it is a line to log.

    Raises:
        FileNotFoundError: if `path` names no checkpoint.
        ValueError: if the model has no variables yet (build it first), if
            the checkpoint is not object-based or one of the model's tensors
            in it cannot be read (damaged files), or if a model variable
            (other than the classifier's with `skip_classifier`) is absent
            from it or has another shape or dtype there: naming the
            variables and both shapes, and suggesting `skip_classifier` when
            only the classifier's mismatch. Nothing is assigned then.
    """
    if not model.variables:
        raise ValueError(
            f"initialize_from_checkpoint: model {model.name!r} has no "
            f"variables yet; build it (call it on an input) first")
    path = resolve_checkpoint(path)
    try:
        reader = tf.train.load_checkpoint(path)
    except _READ_ERRORS as error:
        raise ValueError(f"init checkpoint: the index file {path}.index "
                         f"cannot be read ({_error_text(error)})") from error
    values, skipped = _checked_values(model, reader, path, skip_classifier)
    for variable, value in values:
        variable.assign(value)
    return WarmStart(path, tuple(_name(v) for v, _ in values), tuple(skipped))
