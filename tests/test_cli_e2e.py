"""End to end through the real CLI: outputs, resume, and bad input."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd.data import fashion_mnist

SMALL = [  # k = 2 simulated workers x n = 32: 937.5 steps per epoch.
    "--gin_bindings=distribute.build_strategy.num_replicas = 2",
    "--gin_bindings=train_lib.run.steps_per_loop = 2",
    "--gin_bindings=train_lib.run.eval_every_epochs = 0",
    "--gin_bindings=train_lib.run.checkpoint_every_steps = 2",
]
TRAIN_TAGS = {"loss", "top1_error", "learning_rate", "examples_per_second",
              "loss_scale", "skipped_steps", "skipped_images"}
EVAL_TAGS = {"loss", "top1_error", "top5_error", "median5_top1_error",
             "examples"}
SUMMARY_LABELS = ("Training:", "Validation:", "Checkpoints:", "Export:",
                  "TensorBoard:", "Metrics:")


def _cli(model_dir, *args, tf_config=None):
    env = dict(os.environ)  # The CLI's own quiet default, not conftest's.
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    return subprocess.run(
        [sys.executable, "-m", "tf_lbsgd", f"--model_dir={model_dir}", *args],
        capture_output=True, text=True, env=env, timeout=600, check=False)


def _tags(directory):
    tags = set()
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


def _check_terminal(result, progress_steps, eval_steps, total_steps):
    """stdout holds our lines only: a progress line per loop (at
    `progress_steps`), an evaluation line per evaluation (at `eval_steps`)
    and the final summary; stderr none of TensorFlow's start-up chatter."""
    lines = result.stdout.splitlines()
    progress = [re.match(rf"step (\d+)/{total_steps} \| epoch ", line)
                for line in lines]
    evaluations = [re.match(r"validation at step (\d+) \| epoch ", line)
                   for line in lines]
    summary = [line for line in lines if line.startswith(SUMMARY_LABELS)]
    assert [int(m.group(1)) for m in progress if m] == progress_steps
    assert [int(m.group(1)) for m in evaluations if m] == eval_steps
    assert [line.split(":")[0] + ":" for line in summary] == list(
        SUMMARY_LABELS)
    assert len(lines) == (len(progress_steps) + len(eval_steps)
                          + len(SUMMARY_LABELS)), result.stdout
    for orbits in ("output:", "DictWrapper", "ListWrapper", "{'",
                   "saved checkpoint", "restoring or initializing"):
        assert orbits not in result.stdout
    for chatter in ("Compiled cluster using XLA", "InitializeLog",
                    "cuInit"):
        assert chatter not in result.stderr
    return dict(line.split(":", 1) for line in summary)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("run") / "model")
    result = _cli(model_dir, *SMALL,
                  "--gin_bindings=train_lib.run.epochs = 0.004")  # 4 steps
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir, result


def test_writes_events_checkpoint_config_and_metrics(first_run):
    model_dir, result = first_run
    assert TRAIN_TAGS <= _tags(os.path.join(model_dir, "train"))
    assert "gin/operative_config" in _tags(os.path.join(model_dir, "train"))
    assert EVAL_TAGS <= _tags(os.path.join(model_dir, "validation"))
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-4")
    with open(os.path.join(model_dir, "operative_config.gin")) as f:
        config = f.read()
    assert "build_strategy.num_replicas = 2" in config
    assert "run.epochs = 0.004" in config
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["global_step"] == 4
    assert metrics["global_batch_size"] == 64
    assert metrics["num_replicas"] == 2
    assert metrics["train_wall_time_s"] > 0
    assert metrics["skipped_steps"] == 0 and metrics["loss_scale"] == 1.0
    assert metrics["examples_per_second"] > 0
    assert metrics["eval"]["examples"] == 10000
    assert 0.0 <= metrics["eval"]["top1_error"] <= 1.0
    assert metrics["eval"]["top1_accuracy"] == pytest.approx(
        1 - metrics["eval"]["top1_error"])
    assert metrics["eval"]["top1_error_history"] == [
        metrics["eval"]["top1_error"]]
    assert metrics["eval"]["median5_top1_error"] == metrics["eval"]["top1_error"]
    assert os.listdir(os.path.join(model_dir, "export")) == ["4"]
    summary = _check_terminal(result, [2, 4], [4], 4)
    top1_error = metrics["eval"]["top1_error"]
    assert summary["Validation"].strip().startswith(
        f"top-1 error {top1_error:.4f} (accuracy {100 - 100 * top1_error:.2f}"
        f"%), top-5 error {metrics['eval']['top5_error']:.4f}")
    assert summary["Training"].strip().startswith(
        "step 4 (epoch 0.00427), global batch 64 on 2 replicas")
    assert summary["Export"].strip() == os.path.join(model_dir, "export", "4")
    assert summary["TensorBoard"].strip() == (
        f"tensorboard --logdir={model_dir}")
    assert summary["Metrics"].strip() == os.path.join(model_dir,
                                                      "metrics.json")


def test_second_run_resumes_and_a_finished_run_does_no_more(first_run):
    model_dir, _ = first_run
    result = _cli(model_dir, *SMALL, "--mode=train",
                  "--gin_bindings=train_lib.run.epochs = 0.008")  # 8 steps
    assert result.returncode == 0, result.stderr[-3000:]
    _check_terminal(result, [6, 8], [], 8)  # --mode=train: no evaluation.
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-8")
    again = _cli(model_dir, *SMALL, "--mode=eval",
                 "--gin_bindings=train_lib.run.epochs = 0.008")
    assert again.returncode == 0, again.stderr[-3000:]
    _check_terminal(again, [], [8], 8)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["global_step"] == 8
    # The history carries over runs: the first run's eval, then this one's.
    assert len(metrics["eval"]["top1_error_history"]) == 2
    # The finished training run exported its model (--mode=export:
    # tests/test_api.py). Served on all 10,000 test images, it scores what
    # the checkpoint did.
    export = os.path.join(model_dir, "export", "8")
    serve = tf.saved_model.load(export).signatures["serving_default"]
    images, labels = fashion_mnist.load_fashion_mnist(split="test")
    logits = np.concatenate([
        serve(images=fashion_mnist.normalize(images[i:i + 2000]))["logits"]
        for i in range(0, len(labels), 2000)])
    assert np.mean(logits.argmax(-1) != labels) == pytest.approx(
        metrics["eval"]["top1_error"], abs=2e-4)


def test_divergence_exits_3_and_keeps_the_last_checkpoint(first_run,
                                                           tmp_path):
    model_dir = str(tmp_path / "model")
    shutil.copytree(first_run[0], model_dir)
    before = tf.train.latest_checkpoint(model_dir)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = f.read()
    result = _cli(model_dir, *SMALL, "--mode=train",
                  "--gin_bindings=train_lib.run.epochs = 0.016",
                  "--gin_bindings=schedules.build_learning_rate_schedule."
                  "base_lr = 1e30")
    assert result.returncode == 3, result.stderr[-3000:]
    assert "tf-lbsgd: diverged: Training loss is nan" in result.stderr
    assert tf.train.latest_checkpoint(model_dir) == before
    with open(os.path.join(model_dir, "metrics.json")) as f:
        assert f.read() == metrics


def test_unknown_gin_binding_fails_before_writing(tmp_path):
    model_dir = tmp_path / "never"
    result = _cli(model_dir, "--gin_bindings=train_lib.run.epochz = 2")
    assert result.returncode == 2
    assert "epochz" in result.stderr
    assert not model_dir.exists()


def test_unknown_gin_file_names_it(tmp_path):
    result = _cli(tmp_path / "never", "--gin_file=no_such_config")
    assert result.returncode == 2
    assert "no_such_config" in result.stderr
    assert not (tmp_path / "never").exists()


def test_missing_data_names_files_and_the_install_command(tmp_path):
    result = _cli(tmp_path / "model",
                  "--gin_bindings=fashion_mnist.data_dir = '/nonexistent/fm'")
    assert result.returncode == 2
    assert "/nonexistent/fm/train-images-idx3-ubyte.gz" in result.stderr
    assert "apt-get install -y dataset-fashion-mnist" in result.stderr
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("tf_config,message", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    (json.dumps({"task": {"type": "worker", "index": 0}}),
     "TF_CONFIG has no 'cluster'"),
    (json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                 "task": {"type": "worker", "index": 2}}),
     "TF_CONFIG task index 2 is out of range for 2 'worker' tasks"),
])
def test_bad_tf_config_fails_before_writing(tmp_path, tf_config, message):
    result = _cli(tmp_path / "never", tf_config=tf_config)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "never").exists()


def test_cluster_with_a_one_worker_strategy_is_refused(tmp_path):
    tf_config = json.dumps({"cluster": {"worker": ["localhost:1",
                                                   "localhost:2"]},
                            "task": {"type": "worker", "index": 0}})
    result = _cli(tmp_path / "model", tf_config=tf_config)  # kind: mirrored
    assert result.returncode == 2
    assert ("TF_CONFIG describes a cluster of 2 workers but the strategy "
            "kind is 'mirrored'") in result.stderr
    assert not (tmp_path / "model").exists()


def test_helpfull_documents_the_flags():
    result = subprocess.run([sys.executable, "-m", "tf_lbsgd", "--helpfull"],
                            capture_output=True, text=True, check=False)
    for flag in ("--gin_file", "--gin_bindings", "--model_dir", "--mode"):
        assert flag in result.stdout
