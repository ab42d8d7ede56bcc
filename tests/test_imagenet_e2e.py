"""ResNet-50 on a generated ImageNet, end to end through the real CLI.

The fake is written in the ILSVRC2012 tar layout, TFDS's own imagenet2012
builder prepares it offline, and the paper's kn = 256 experiment file runs on
it with only the sizes shrunk (2 replicas x n = 2, 64x64 crops, 1 epoch).
"""

import json
import os
import subprocess
import sys

import tensorflow as tf

from tf_lbsgd.data import fake_imagenet


def _write_fake(out_dir):
    return fake_imagenet.write_fake_imagenet(
        out_dir, classes=3, train_per_class=4, val=6, corrupt=1, seed=0)


def _tags(directory):
    tags = set()
    for path in tf.io.gfile.glob(os.path.join(directory, "events.out.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_resnet50_trains_and_evaluates_on_fake_imagenet(tmp_path):
    manual = tmp_path / "manual"
    _write_fake(manual)
    model_dir = tmp_path / "model"
    bindings = [
        f"imagenet.data_dir = '{tmp_path / 'tfds'}'",
        f"imagenet.manual_dir = '{manual}'",
        "imagenet.image_size = 64",
        "imagenet.shuffle_buffer = 16",
        "distribute.build_strategy.num_replicas = 2",
        "train_lib.run.global_batch_size = None",
        "train_lib.run.per_replica_batch_size = 2",
        "train_lib.run.epochs = 1",
        "train_lib.run.steps_per_loop = 1",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "tf_lbsgd", f"--model_dir={model_dir}",
         "--gin_file=experiments/imagenet/resnet50_kn256"]
        + [f"--gin_bindings={b}" for b in bindings],
        capture_output=True, text=True, timeout=900, check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    # 12 good + 1 corrupt training images (TFDS stores all 13) over kn = 4.
    assert metrics["global_step"] == 3
    assert metrics["global_batch_size"] == 4
    assert metrics["skipped_images"] >= 1
    assert metrics["eval"]["examples"] == 6
    assert 0.0 <= metrics["eval"]["top1_error"] <= 1.0
    assert {"skipped_images", "top1_error"} <= _tags(str(model_dir / "train"))
    assert {"top1_error", "top5_error"} <= _tags(str(model_dir / "validation"))
    config = (model_dir / "operative_config.gin").read_text()
    assert "resnet_imagenet.depth = 50" in config
