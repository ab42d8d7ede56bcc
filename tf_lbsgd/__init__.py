"""tf_lbsgd: large-minibatch synchronous SGD (Goyal et al., 2017) for TensorFlow/Keras.

The public names, importable from the package (loaded on first use, so that
`import tf_lbsgd` and the CLI's `--help` do not start TensorFlow):

Run the whole recipe on your model and data (`api`, `train_lib`):
    train, Recipe, TrainResult, build_strategy, as_data_source
Your data as the run's input (`data.adapters`, `data.source`):
    from_arrays, from_dataset, example_seeds, DataSource
The recipe's pieces for your own Keras code (`model.compile`/`model.fit`):
    MomentumSGD, decays_variable (R5-R7); LARS, LAMB (past 8k, You et al.
    2017 and 2019);
    build_learning_rate_schedule, linear_scaling_rule, GradualWarmup,
    ConstantWarmup, StepDecay, CosineDecay, ConstantLR (R1-R4),
    PolynomialDecay (LARS' poly decay);
    WorkerBatchNorm and, for model.fit, SyncReplicaStatistics (R9); global_batch_loss (R8),
    SoftmaxCrossEntropy (with label smoothing);
    GradientAllReduce
After training:
    export_saved_model, initialize_from_checkpoint
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "train": "tf_lbsgd.api",
    "Recipe": "tf_lbsgd.api",
    "build_strategy": "tf_lbsgd.api",
    "as_data_source": "tf_lbsgd.api",
    "TrainResult": "tf_lbsgd.train_lib",
    "from_arrays": "tf_lbsgd.data.adapters",
    "from_dataset": "tf_lbsgd.data.adapters",
    "example_seeds": "tf_lbsgd.data.adapters",
    "DataSource": "tf_lbsgd.data.source",
    "MomentumSGD": "tf_lbsgd.optimizers",
    "decays_variable": "tf_lbsgd.optimizers",
    "LARS": "tf_lbsgd.lars",
    "LAMB": "tf_lbsgd.lamb",
    "build_learning_rate_schedule": "tf_lbsgd.schedules",
    "linear_scaling_rule": "tf_lbsgd.schedules",
    "GradualWarmup": "tf_lbsgd.schedules",
    "ConstantWarmup": "tf_lbsgd.schedules",
    "StepDecay": "tf_lbsgd.schedules",
    "CosineDecay": "tf_lbsgd.schedules",
    "ConstantLR": "tf_lbsgd.schedules",
    "PolynomialDecay": "tf_lbsgd.schedules",
    "WorkerBatchNorm": "tf_lbsgd.models.layers",
    "SyncReplicaStatistics": "tf_lbsgd.models.layers",
    "global_batch_loss": "tf_lbsgd.losses",
    "SoftmaxCrossEntropy": "tf_lbsgd.losses",
    "GradientAllReduce": "tf_lbsgd.allreduce",
    "export_saved_model": "tf_lbsgd.export",
    "initialize_from_checkpoint": "tf_lbsgd.warm_start",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    """Imports the module of a public name on first use (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tf_lbsgd' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
