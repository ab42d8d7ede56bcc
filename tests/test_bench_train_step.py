"""tf_lbsgd.benchmarks.train_step: log parsing, the table's arithmetic; a
tiny run of tools/bench_train_step.py."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tf_lbsgd.benchmarks import train_step as bench

# abspath, not resolve(): under Bazel the tool is in the runfiles next to
# this file, which is a symlink into the checkout.
REPO_ROOT = pathlib.Path(os.path.abspath(__file__)).parents[1]

# Lines as Model Garden's resnet_ctl_imagenet_main logs them (seen here).
MODEL_GARDEN_LOG = """\
I1125 14:49:25.575316 140027183377280 keras_utils.py:145] TimeHistory: 26.28 seconds, 0.61 examples/second between steps 0 and 1
I1125 14:49:38.706026 140027183377280 keras_utils.py:145] TimeHistory: 12.84 seconds, 1.25 examples/second between steps 1 and 2
I1125 14:49:49.719298 140027183377280 keras_utils.py:145] TimeHistory: 10.99 seconds, 1.46 examples/second between steps 2 and 3
I1125 14:50:00.394624 140027183377280 keras_utils.py:145] TimeHistory: 10.67 seconds, 1.50 examples/second between steps 3 and 4
"""


def test_model_garden_log_skips_the_warmup_steps():
    assert bench.seconds_per_step_from_log(MODEL_GARDEN_LOG, 2) == (
        pytest.approx((10.99 + 10.67) / 2))
    assert bench.seconds_per_step_from_log(MODEL_GARDEN_LOG, 0) == (
        pytest.approx((26.28 + 12.84 + 10.99 + 10.67) / 4))


def test_model_garden_log_without_steady_steps_is_an_error():
    with pytest.raises(ValueError, match="no TimeHistory line after step 4"):
        bench.seconds_per_step_from_log(MODEL_GARDEN_LOG, 4)


def test_summarize_rates_ratios_and_peak_share():
    rows, records = bench.summarize(
        {"ours": [0.5, 0.4, 0.6], "peer": [1.0, 1.2, 0.8]},
        global_batch=16, gflop=2.0, peak_gflops=100.0)
    assert records["ours"]["median_s_per_step"] == 0.5
    assert records["ours"]["images_per_second"] == pytest.approx(32.0)
    assert records["ours"]["peak_fraction"] == pytest.approx(0.64)
    assert records["peer"]["ours_speedup"] == pytest.approx(2.0)
    assert [row[0] for row in rows] == ["ours", "peer"]
    assert rows[1][-1] == "2.00x"


def test_resnet50_training_flop_per_image():
    """3 x 4.09 G multiply-adds x 2 (R15, docs/paper.md)."""
    spec = bench.MODELS["resnet50"]
    model = spec["model_fn"](input_shape=spec["image_shape"],
                             num_classes=spec["num_classes"])
    assert bench.gflop_per_image(model) == pytest.approx(3 * 4.09 * 2,
                                                         rel=0.01)


def test_tiny_run_writes_a_consistent_table(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "bench_train_step.py"),
         "--model=small", "--rounds=1", "--steps=2", "--batch=16",
         "--peers=ours,keras_fit", "--replicas=2", f"--out_json={out}"],
        capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| ours |" in result.stdout and "| keras_fit |" in result.stdout
    payload = json.loads(out.read_text())
    assert payload["global_batch"] == 16 and payload["replicas"] == 2
    assert payload["reference"] == "ours"
    assert payload["machine"]["cores"] == os.cpu_count()
    assert payload["matmul_peak_gflops"] > 0
    ours, fit = payload["peers"]["ours"], payload["peers"]["keras_fit"]
    assert ours["ours_speedup"] == 1.0
    for record in (ours, fit):
        assert record["median_s_per_step"] > 0
        assert record["images_per_second"] == pytest.approx(
            16 / record["median_s_per_step"])
    assert fit["ours_speedup"] == pytest.approx(
        fit["median_s_per_step"] / ours["median_s_per_step"])
