"""Your own Keras model in a run: built under the strategy, checked.

A run takes a model as a `model_fn` (called under the strategy's scope and
the precision policy, as the built-in models are) or as a `keras.Model`.
Synchronous data-parallel training needs every variable mirrored on the k
replicas, i.e. created under `strategy.scope()`: a model built elsewhere is
cloned there with its weights (functional, Sequential, or a subclassed model
with a `get_config`).
"""

import inspect

import keras
import tensorflow as tf


def _call_model_fn(model_fn, input_shape, num_classes):
    """Calls `model_fn` with the keyword arguments it takes of
    `input_shape` and `num_classes` (a user's may take neither)."""
    try:
        parameters = inspect.signature(model_fn).parameters
    except (TypeError, ValueError):  # A builtin or C callable: try all.
        parameters = None
    keywords = {"input_shape": input_shape, "num_classes": num_classes}
    takes_any = parameters is None or any(
        p.kind == p.VAR_KEYWORD for p in parameters.values())
    if not takes_any:
        keywords = {k: v for k, v in keywords.items() if k in parameters}
    if keywords.get("num_classes", 0) is None:
        if "num_classes" in (parameters or {}) and parameters[
                "num_classes"].default is inspect.Parameter.empty:
            raise ValueError(
                f"model_fn {getattr(model_fn, '__name__', model_fn)!r} needs "
                f"num_classes but the data does not say it; pass "
                f"num_classes=...")
        del keywords["num_classes"]
    model = model_fn(**keywords)
    if not isinstance(model, keras.Model):
        raise ValueError(f"model_fn {getattr(model_fn, '__name__', model_fn)!r}"
                         f" returned {type(model).__name__}, not a keras.Model")
    return model


def _created_in_scope(model, strategy):
    return all(strategy.extended.variable_created_in_scope(w.value)
               for w in model.weights)


def _clone_in_scope(model):
    """`model` rebuilt under the current scope, with its weights."""
    try:
        clone = keras.models.clone_model(model)
    except Exception as e:  # pylint: disable=broad-except
        raise ValueError(
            f"model {model.name!r} was built outside the strategy's scope and "
            f"cannot be cloned into it ({type(e).__name__}: {e}); build it "
            f"under strategy.scope() or pass a model_fn") from e
    if not clone.built and model.built and getattr(model, "inputs", None):
        clone.build(model.inputs[0].shape)
    clone.set_weights(model.get_weights())
    return clone


def output_classes(model, input_shape):
    """The number of classes of `model`'s logits, building it if needed.

    Raises:
        ValueError: when the output is not [batch, classes] logits.
    """
    probe = tf.zeros((1,) + tuple(input_shape), model.compute_dtype)
    try:
        logits = model(probe, training=False)
    except Exception as e:  # pylint: disable=broad-except
        raise ValueError(
            f"model {model.name!r} does not take images of shape "
            f"{tuple(input_shape)} (the data's): {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(logits, tf.Tensor) or logits.shape.rank != 2:
        raise ValueError(
            f"model {model.name!r} must return [batch, classes] logits, got "
            f"{getattr(logits, 'shape', type(logits).__name__)}")
    return int(logits.shape[-1])


def build_in_scope(model, strategy, input_shape, num_classes):
    """The run's model, its variables mirrored by `strategy`.

    Call under `strategy.scope()` (and the run's dtype policy).

    Args:
        model: a `keras.Model`, or a callable returning one (given those of
            `input_shape` and `num_classes` that it takes as keywords).
        strategy: the run's `tf.distribute.Strategy`.
        input_shape: the shape of one image, (height, width, channels).
        num_classes: the data's number of classes, None if unknown.

    Returns:
        `(model, num_classes)`: the model built under the scope and the
        number of classes of its output.

    Raises:
        ValueError: for a model_fn that returns no model, a model that
            cannot be cloned into the scope, does not take the data's images
            or returns other than [batch, num_classes] logits.
    """
    if isinstance(model, keras.Model):
        if model.weights and not _created_in_scope(model, strategy):
            model = _clone_in_scope(model)
    elif callable(model):
        model = _call_model_fn(model, input_shape, num_classes)
    else:
        raise ValueError(f"model must be a keras.Model or a model_fn, got "
                         f"{type(model).__name__}")
    classes = output_classes(model, input_shape)
    if num_classes is not None and classes != num_classes:
        raise ValueError(
            f"model {model.name!r} has {classes} outputs but the data has "
            f"num_classes={num_classes}; give its last layer {num_classes} "
            f"units")
    return model, classes
