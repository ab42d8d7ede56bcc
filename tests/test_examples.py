"""The scripts of examples/ run as a user runs them, on small data.

Each runs in this process (`runpy`, its own `__main__`, argv as on the
command line) to spare a TensorFlow start: its own Keras CNN with the whole
recipe on 2 logical-CPU replicas, and the `model.fit` route.
"""

import json
import os
import runpy
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "examples")
SMALL = ["--replicas=2", "--global_batch_size=128", "--train_examples=1024",
         "--test_examples=512"]


def _run(name, args, capsys):
    argv = sys.argv
    sys.argv = [name] + args
    try:
        runpy.run_path(os.path.join(EXAMPLES, name), run_name="__main__")
    finally:
        sys.argv = argv
    return capsys.readouterr().out.splitlines()[-1]


def _accuracy(line):
    return float(line.split("top-1 accuracy ")[1].split()[0].rstrip(";"))


def test_own_cnn_trains_with_the_recipe_and_exports(tmp_path, capsys):
    model_dir = str(tmp_path / "own_cnn")
    last = _run("own_cnn.py", [f"--model_dir={model_dir}", "--epochs=2"]
                + SMALL, capsys)
    assert "after 16 steps of kn = 128 on 2 replicas" in last, last
    assert _accuracy(last) > 0.3, last  # Chance: 0.1.
    with open(os.path.join(model_dir, "metrics.json")) as f:
        assert json.load(f)["eval"]["examples"] == 512
    assert os.path.isdir(os.path.join(model_dir, "export", "16"))


def test_keras_fit_trains_saves_and_reloads(tmp_path, capsys):
    path = str(tmp_path / "fit.keras")
    last = _run("keras_fit.py", [f"--model_path={path}", "--epochs=2"]
                + SMALL, capsys)
    assert "reloaded model predicts the same: True" in last, last
    assert _accuracy(last) > 0.3, last
    assert os.path.isfile(path)


@pytest.mark.parametrize("name", ["own_cnn.py", "keras_fit.py"])
def test_examples_document_their_command(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        assert f"python examples/{name}" in f.read()
