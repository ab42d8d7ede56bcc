"""TensorBoard as a user sees it (issue 18): the real server over the
model_dir of a short real run, asked over HTTP what its dashboards show.

One run of 2 replicas (8 steps, evaluated twice, steps 3-4 traced by the
profiler) and one TensorBoard over it, read once and stopped in a module
fixture; the tests check the answers: the train and validation runs with
overlaying tags, the values metrics.json holds, the HParams session, the
profile plugin's trace, and a port closed after the stop.
"""

import os

import keras
import numpy as np
import pytest

from tf_lbsgd import distribute
from tf_lbsgd import tensorboard_server
from tf_lbsgd import train_lib
from tf_lbsgd.data import adapters

K = 2
GLOBAL_BATCH = 16
SHAPE, CLASSES = (8, 8, 1), 3
PROFILE_STEPS = (3, 4)
# The session's columns and metrics the test asks the HParams plugin for.
HPARAMS = ("batch/kn", "batch/k", "batch/n")


def _arrays(count, seed):
    """Random images and labels: the curves need not go down."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(count,) + SHAPE).astype("f4"),
            rng.integers(0, CLASSES, size=count).astype("i4"))


def _model_fn(input_shape, num_classes):
    images = keras.Input(input_shape)
    x = keras.layers.Flatten()(images)
    return keras.Model(images, keras.layers.Dense(num_classes)(x))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """2 epochs of 4 steps (kn = 16), evaluated after each, steps 3-4
    profiled."""
    model_dir = str(tmp_path_factory.mktemp("tensorboard") / "run")
    result = train_lib.train_model(
        model_dir,
        adapters.from_arrays(_arrays(64, 0), _arrays(32, 1), CLASSES),
        _model_fn, distribute.logical_cpu_strategy(K),
        per_replica_batch_size=None, global_batch_size=GLOBAL_BATCH,
        epochs=2, steps_per_loop=2,
        eval_every_epochs=1, eval_top_k=(1, 2), export=False,
        profile_steps=PROFILE_STEPS)
    return result


def _read_dashboards(server):
    """What TensorBoard's dashboards show, once it has loaded the runs."""
    url = server.url
    seen = {"port": server.port, "port_open": tensorboard_server.port_is_open(
        server.port)}
    seen["scalar_tags"] = tensorboard_server.wait_for(
        lambda: tensorboard_server.scalar_tags(url),
        lambda tags: {"train", "validation"} <= set(tags), what="both runs")
    seen["runs"] = tensorboard_server.runs(url)
    seen["validation_top1_error"] = tensorboard_server.scalars(
        url, "validation", "top1_error")
    seen["train_loss"] = tensorboard_server.scalars(url, "train", "loss")
    seen["experiment"] = tensorboard_server.hparams_experiment(url)
    seen["session_groups"] = tensorboard_server.hparams_session_groups(
        url, HPARAMS)
    seen["profile_runs"] = tensorboard_server.profile_runs(url)
    seen["plugins"] = tensorboard_server.plugins(url)
    return seen


@pytest.fixture(scope="module")
def seen(run):
    """The answers of a TensorBoard over the run's model_dir, and whether
    its port is still open after the server stopped."""
    with tensorboard_server.serve(run.model_dir) as server:
        answers = _read_dashboards(server)
    answers["port_open_after_stop"] = tensorboard_server.port_is_open(
        answers["port"])
    return answers


def test_train_and_validation_runs_share_the_tags_that_overlay(seen):
    tags = seen["scalar_tags"]
    assert {"train", "validation"} <= set(seen["runs"])
    for run_name in ("train", "validation"):
        assert {"loss", "top1_error"} <= set(tags[run_name]), run_name
    assert "learning_rate" in tags["train"]
    assert "learning_rate" not in tags["validation"]
    assert not any("/" in tag for run_tags in tags.values()
                   for tag in run_tags), tags  # No "train/loss" prefixes.


def test_the_curves_hold_the_values_of_metrics_json(seen, run):
    evaluation = run.metrics["eval"]
    points = seen["validation_top1_error"]
    assert [step for step, _ in points] == evaluation["evaluated_steps"]
    assert points[-1][1] == pytest.approx(evaluation["top1_error"], abs=1e-6)
    assert [step for step, _ in seen["train_loss"]] == [2, 4, 6, 8]


def test_hparams_lists_the_run_with_its_batch_sizes(seen):
    names = {info["name"] for info in seen["experiment"]["hparamInfos"]}
    assert set(HPARAMS) <= names
    metrics = {(info["name"].get("group"), info["name"]["tag"])
               for info in seen["experiment"]["metricInfos"]}
    assert {("train", "loss"), ("validation", "top1_error")} <= metrics
    (group,) = seen["session_groups"]["sessionGroups"]
    assert group["hparams"] == {"batch/kn": GLOBAL_BATCH, "batch/k": K,
                                "batch/n": GLOBAL_BATCH // K}
    assert len(group["sessions"]) == 1


def test_the_profile_plugin_lists_the_traced_steps(seen, run):
    (trace,) = seen["profile_runs"]
    assert trace.startswith("train/")
    trace_dir = os.path.join(run.model_dir, "train", "plugins", "profile",
                             trace.split("/", 1)[1])
    assert any(name.endswith(".xplane.pb") for name in os.listdir(trace_dir))
    assert seen["plugins"]["profile"]["enabled"]


def test_stopping_the_server_closes_its_port(seen):
    assert seen["port_open"]
    assert not seen["port_open_after_stop"]


def test_a_missing_logdir_is_refused_before_a_server_starts(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        with tensorboard_server.serve(str(tmp_path / "missing")):
            pass


def test_a_server_that_does_not_answer_in_time_is_stopped(tmp_path):
    with pytest.raises(tensorboard_server.TensorBoardError,
                       match="did not answer within 0.5 s"):
        with tensorboard_server.serve(str(tmp_path),
                                      start_timeout_seconds=0.5):
            pass


def test_only_a_local_server_is_read():
    with pytest.raises(ValueError, match="example.com"):
        tensorboard_server.runs("http://example.com:6006")


def test_the_scalars_url_filters_the_overlaid_tags():
    url = tensorboard_server.dashboard_url(
        "http://127.0.0.1:1", "scalars", "^(loss|top1_error)$", 0.0)
    assert url == ("http://127.0.0.1:1/#scalars&tagFilter="
                   "%5E%28loss%7Ctop1_error%29%24&_smoothingWeight=0")
    with pytest.raises(ValueError, match="'graphs'"):
        tensorboard_server.dashboard_url("http://127.0.0.1:1", "graphs")


def test_a_missing_browser_names_the_install_command(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(FileNotFoundError, match="apt-get install chromium"):
        tensorboard_server.find_chromium()
