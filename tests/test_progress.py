"""The terminal lines of a run: progress, evaluation, final summary, and
orbit's own messages kept off stdout."""

import itertools
import json
import logging as std_logging

import orbit
from orbit import controller as orbit_controller
import pytest
import tensorflow as tf

from tf_lbsgd import progress

TRAIN_OUTPUT = {"loss": 0.5, "top1_error": 0.25, "learning_rate": 0.1,
                "examples_per_second": 1234.4, "loss_scale": 1.0,
                "skipped_steps": 0}
EVAL_OUTPUT = {"loss": 0.75, "top1_error": 0.3, "top5_error": 0.1,
               "top10_error": 0.05, "median5_top1_error": 0.3,
               "examples": 10000.0}


def _clock(*times):
    """A clock returning `times` in turn (exact lines need exact times)."""
    return iter(times).__next__


class _Trainer(orbit.AbstractTrainer):
    """Counts steps and reports fixed numbers as tensors, like ours."""

    def __init__(self, global_step):
        super().__init__()
        self.global_step = global_step

    def train(self, num_steps):
        self.global_step.assign_add(tf.cast(num_steps, tf.int64))
        return {key: tf.constant(value) for key, value in TRAIN_OUTPUT.items()}


class _Evaluator(orbit.AbstractEvaluator):

    def evaluate(self, num_steps):
        return {key: tf.constant(value) for key, value in EVAL_OUTPUT.items()}


@pytest.mark.parametrize("seconds,text", [
    (0, "0s"), (59.9, "59s"), (61, "1m01s"), (3723, "1h02m03s"), (-5, "0s")])
def test_format_duration(seconds, text):
    assert progress.format_duration(seconds) == text


def test_progress_line_per_loop_with_eta_after_the_first(capsys):
    step = tf.Variable(0, dtype=tf.int64)
    report = progress.ProgressReporter(step, total_steps=10,
                                       steps_per_epoch=4,
                                       clock=_clock(100.0, 104.0))
    step.assign(2)
    report(TRAIN_OUTPUT)
    step.assign(4)  # 2 steps in 4 s: 6 to go, 12 s.
    report(dict(TRAIN_OUTPUT, loss=tf.constant(0.25)))
    assert capsys.readouterr().out.splitlines() == [
        "step 2/10 | epoch 0.50 | loss 0.5000 | top1 err 0.2500 | lr 0.1000 "
        "| 1234 img/s | ETA ?",
        "step 4/10 | epoch 1.00 | loss 0.2500 | top1 err 0.2500 | lr 0.1000 "
        "| 1234 img/s | ETA 12s"]


def test_eval_line_lists_each_top_k_and_the_time_when_timed(capsys):
    step = tf.Variable(5, dtype=tf.int64)
    report = progress.EvalReporter(step, steps_per_epoch=2.5,
                                   clock=_clock(10.0, 16.04))
    report(EVAL_OUTPUT)  # Not timed: no time.
    output = report.timing(_Evaluator()).evaluate(tf.constant(-1))
    report(dict(output, top10_error=0.0))
    assert capsys.readouterr().out.splitlines() == [
        "validation at step 5 | epoch 2.00 | loss 0.7500 | top1 err 0.3000 "
        "| top5 err 0.1000 | top10 err 0.0500 | 10000 examples",
        "validation at step 5 | epoch 2.00 | loss 0.7500 | top1 err 0.3000 "
        "| top5 err 0.1000 | top10 err 0.0000 | 10000 examples | 6.0s"]


@pytest.fixture
def caplog_absl(caplog):
    with caplog.at_level(std_logging.INFO, logger="absl"):
        yield caplog


def test_orbit_messages_go_to_the_log_and_ours_to_stdout(tmp_path, capsys,
                                                         caplog_absl):
    step = tf.Variable(0, dtype=tf.int64)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(step=step), str(tmp_path), max_to_keep=1,
        step_counter=step, checkpoint_interval=2)
    lines = progress.ProgressReporter(step, 6, 2, clock=_clock(0.0, 3.0))
    eval_lines = progress.EvalReporter(step, 2, clock=_clock(5.0, 7.5))
    original = orbit_controller._log  # pylint: disable=protected-access
    with progress.orbit_prints_to_log():
        controller = orbit.Controller(
            global_step=step, trainer=_Trainer(step),
            evaluator=eval_lines.timing(_Evaluator()), steps_per_loop=2,
            checkpoint_manager=manager, train_actions=[lines],
            eval_actions=[eval_lines])
        controller.train(steps=4)
        controller.evaluate(steps=-1)
    assert capsys.readouterr().out.splitlines() == [
        "step 2/6 | epoch 1.00 | loss 0.5000 | top1 err 0.2500 | lr 0.1000 "
        "| 1234 img/s | ETA ?",
        "step 4/6 | epoch 2.00 | loss 0.5000 | top1 err 0.2500 | lr 0.1000 "
        "| 1234 img/s | ETA 3s",
        "validation at step 4 | epoch 2.00 | loss 0.7500 | top1 err 0.3000 "
        "| top5 err 0.1000 | top10 err 0.0500 | 10000 examples | 2.5s"]
    logged = [record.getMessage() for record in caplog_absl.records]
    assert "restoring or initializing model..." in logged
    assert f"saved checkpoint to {tmp_path}/ckpt-4." in logged
    assert any(message.startswith("train | step:      4 | steps/sec:")
               for message in logged)
    assert any(message.startswith(" eval | step:      4 | eval time:")
               for message in logged)
    # Restored on exit: orbit prints again.
    assert orbit_controller._log is original  # pylint: disable=protected-access
    lines.clock = _clock(6.0)
    controller.train(steps=6)
    out = capsys.readouterr().out
    assert "train | step:      4 | training until step 6..." in out
    assert "output:" in out and "step 6/6 |" in out


def test_orbit_log_is_restored_after_an_error():
    original = orbit_controller._log  # pylint: disable=protected-access
    with pytest.raises(RuntimeError):
        with progress.orbit_prints_to_log():
            assert orbit_controller._log is not original  # pylint: disable=protected-access
            raise RuntimeError("stop")
    assert orbit_controller._log is original  # pylint: disable=protected-access


METRICS = {
    "skipped_images": 0, "global_step": 5, "epochs": 0.021333333333333333,
    "global_batch_size": 256, "num_replicas": 8,
    "train_wall_time_s": 52.095370054244995, "skipped_steps": 0,
    "loss_scale": 1.0, "examples_per_second": 24.570321674789582,
    "eval": {"top1_accuracy": 0.2239, "top1_error": 0.7761,
             "top5_error": 0.32020000000000004, "loss": 2.258362109375,
             "examples": 10000.0, "median5_top1_error": 0.80855,
             "top1_error_history": [0.841, 0.7761],
             "evaluated_steps": [2, 5]}}


def _run_dir(tmp_path, step, export=True):
    """A model_dir with a real checkpoint of `step`, metrics.json and (if
    `export`) export/<step>/."""
    model_dir = tmp_path / "run"
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(v=tf.Variable(1.0)), str(model_dir), max_to_keep=1)
    manager.save(checkpoint_number=step)
    (model_dir / "metrics.json").write_text(json.dumps(METRICS))
    if export:
        (model_dir / "export" / str(step)).mkdir(parents=True)
    return str(model_dir)


def test_final_summary_of_a_finished_run(tmp_path):
    model_dir = _run_dir(tmp_path, 5)
    assert progress.final_summary(METRICS, model_dir).splitlines() == [
        "Training:    step 5 (epoch 0.0213), global batch 256 on 8 replicas, "
        "52s training time, 25 images/s",
        "Validation:  top-1 error 0.7761 (accuracy 22.39%), top-5 error "
        "0.3202, median of the last 2 top-1 errors 0.8085, loss 2.2584 "
        "(10000 examples at step 5)",
        f"Checkpoints: {model_dir} (newest: ckpt-5)",
        f"Export:      {model_dir}/export/5",
        f"TensorBoard: tensorboard --logdir={model_dir}",
        f"Metrics:     {model_dir}/metrics.json"]


def test_training_line_names_packed_workers(tmp_path):
    packed = {"workers": 8, "replicas": 2, "workers_per_replica": 4,
              "reason": "auto: 8 workers packed onto 2 replicas (4 each, "
                        "ghost batch norm per worker) for 2 core(s), where "
                        "it measured faster"}
    metrics = dict(METRICS, num_replicas=2, workers=packed)
    model_dir = _run_dir(tmp_path, 5)
    line = progress.final_summary(metrics, model_dir)
    assert line.splitlines()[0] == (
        "Training:    step 5 (epoch 0.0213), global batch 256 (auto: 8 "
        "workers packed onto 2 replicas (4 each, ghost batch norm per "
        "worker) for 2 core(s), where it measured faster), 52s training "
        "time, 25 images/s")
    unpacked = dict(METRICS, workers=dict(packed, workers_per_replica=1))
    assert "on 8 replicas" in progress.final_summary(
        unpacked, model_dir).splitlines()[0]


def test_final_summary_without_evaluation_export_or_record(tmp_path):
    model_dir = _run_dir(tmp_path, 3, export=False)
    metrics = dict(METRICS, global_step=3, epochs=90.0, eval=None,
                   skipped_steps=2, examples_per_second=None,
                   train_wall_time_s=3725.0)
    lines = progress.final_summary(metrics, model_dir).splitlines()
    assert lines[:3] == [
        "Training:    step 3 (epoch 90), global batch 256 on 8 replicas, "
        "1h02m05s training time, 2 steps skipped (loss scale)",
        "Validation:  none",
        f"Checkpoints: {model_dir} (newest: ckpt-3)"]
    assert lines[3] == "Export:      none for step 3"
    # No record (an export of a run without metrics.json): the newest.
    (tmp_path / "run" / "export" / "2").mkdir(parents=True)
    (tmp_path / "run" / "export" / "10").mkdir()
    assert progress.final_summary({}, model_dir).splitlines()[:2] == [
        f"Checkpoints: {model_dir} (newest: ckpt-3)",
        f"Export:      {model_dir}/export/10"]


def test_final_summary_quotes_a_logdir_with_spaces(tmp_path):
    model_dir = str(tmp_path / "my runs")
    summary = progress.final_summary({}, model_dir).splitlines()
    assert summary == [f"Checkpoints: {model_dir} (newest: none)",
                       "Export:      none",
                       f"TensorBoard: tensorboard --logdir='{model_dir}'"]
