"""Writes what a run leaves in model_dir besides checkpoints and events.

The file names, and readers that need no TensorFlow, are in
`tf_lbsgd.analysis.run_outputs`; this writer uses `tf.io.gfile`, so that a
model_dir may be on any file system TensorFlow reads.
"""

import json
import os

import gin
import tensorflow as tf

from tf_lbsgd.analysis.run_outputs import EVAL_OPERATIVE_CONFIG
from tf_lbsgd.analysis.run_outputs import METRICS
from tf_lbsgd.analysis.run_outputs import OPERATIVE_CONFIG

__all__ = ["EVAL_OPERATIVE_CONFIG", "METRICS", "OPERATIVE_CONFIG",
           "read_metrics", "write_metrics", "write_operative_config"]


def _atomic_write(path, text):
    """Writes via a temporary file and a rename, so no half-written file."""
    tmp = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def write_operative_config(model_dir, summary_dir, step,
                           name=OPERATIVE_CONFIG):
    """Saves gin's operative config to model_dir/`name` and as TensorBoard
    text in `summary_dir`."""
    config = gin.operative_config_str()
    _atomic_write(os.path.join(model_dir, name), config)
    writer = tf.summary.create_file_writer(summary_dir)
    with writer.as_default():
        markdown = "\n".join("    " + line for line in config.splitlines())
        tf.summary.text("gin/operative_config", markdown, step=step)
    writer.close()


def read_metrics(model_dir):
    """The metrics.json of an earlier run, or {} if there is none."""
    path = os.path.join(model_dir, METRICS)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def write_metrics(model_dir, metrics):
    """Writes metrics.json (sorted keys, atomically)."""
    _atomic_write(os.path.join(model_dir, METRICS),
                  json.dumps(metrics, indent=2, sort_keys=True) + "\n")
