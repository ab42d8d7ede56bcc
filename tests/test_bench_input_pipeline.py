"""Smoke tests of tf_lbsgd.benchmarks.input_pipeline on a tiny generated set.

8 images of 48..96 px, 1 round: the two pipelines' outputs, their shared
normalisation against an independent numpy formula, and the JSON written.
No timing is asserted.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
from official.vision.ops import preprocess_ops

from tf_lbsgd import benchmark
from tf_lbsgd.benchmarks import input_pipeline as bench
from tf_lbsgd.data import fake_imagenet
from tf_lbsgd.data import imagenet_preprocessing

NUM_IMAGES = 8
MIN_SIDE = 48
MAX_SIDE = 96
SIZE = 224
# ImageNet statistics (Model Garden MEAN_NORM / STDDEV_NORM), in pixel units.
MEAN = 255.0 * np.array([0.485, 0.456, 0.406])
STD = 255.0 * np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("bench_images")
    files = bench.write_images(data_dir, NUM_IMAGES, MIN_SIDE, MAX_SIDE)
    return bench.read_records(files, NUM_IMAGES)


def _outputs(records, name):
    dataset = bench.make_dataset(records, bench.map_fns()[name],
                                 bench.PER_CORE)
    return [(image.numpy(), int(label)) for image, label in dataset]


def test_records_are_in_memory(records):
    assert len(records) == NUM_IMAGES
    assert all(isinstance(record, bytes) for record in records)
    data = bench.describe_records(records)
    assert data["num_images"] == NUM_IMAGES
    assert MIN_SIDE <= data["mean_height"] <= MAX_SIDE
    assert MIN_SIDE <= data["mean_width"] <= MAX_SIDE
    assert data["mean_jpeg_bytes"] > 0


def test_both_pipelines_give_normalised_224_float32_images(records):
    ours = _outputs(records, bench.OURS)
    peer = _outputs(records, bench.PEER)
    assert len(ours) == len(peer) == NUM_IMAGES
    for (image, label), (peer_image, peer_label) in zip(ours, peer):
        for array in (image, peer_image):
            assert array.shape == (SIZE, SIZE, 3)
            assert array.dtype == np.float32
            assert np.all(np.isfinite(array))
            assert abs(float(array.mean())) < 3
        # Ours subtracts the Model Garden layout's label offset of 1.
        assert peer_label == label + 1


def test_normalise_step_matches_numpy():
    image = np.random.default_rng(0).uniform(
        0, 255, size=(5, 7, 3)).astype(np.float32)
    expected = (image - MEAN) / STD
    ours = imagenet_preprocessing.normalize(tf.constant(image)).numpy()
    # The Model Garden parser's step, with the arguments it passes.
    peer = preprocess_ops.normalize_image(
        tf.constant(image), offset=preprocess_ops.MEAN_RGB,
        scale=preprocess_ops.STDDEV_RGB).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(peer, expected, rtol=1e-5, atol=1e-5)


def test_flat_image_is_normalised_alike_end_to_end():
    # Any crop, flip and bilinear resize of a flat colour is that colour, so
    # both whole pipelines must give (colour - mean) / std everywhere.
    colour = np.array([200, 120, 40], np.uint8)
    jpeg = tf.io.encode_jpeg(np.broadcast_to(colour, (90, 70, 3)).copy(),
                             quality=100).numpy()
    record = fake_imagenet.make_example(jpeg, label=3)
    expected = (colour - MEAN) / STD
    images = {}
    for name, fn in bench.map_fns().items():
        image, _ = fn(tf.constant(record))
        images[name] = image.numpy()
        assert images[name].shape == (SIZE, SIZE, 3)
        # JPEG colour conversion may move a flat colour by about 1 level.
        np.testing.assert_allclose(
            images[name], np.broadcast_to(expected, (SIZE, SIZE, 3)),
            atol=2.0 / STD.min())
    np.testing.assert_allclose(images[bench.OURS], images[bench.PEER],
                               atol=1e-4)


def test_run_writes_json_with_positive_rates(tmp_path):
    # The steps of tools/bench_input_pipeline.py's main, tiny.
    out_json = tmp_path / "out" / "bench.json"
    data_dir = tmp_path / "images"
    records, info = bench.load_records(NUM_IMAGES, data_dir, MIN_SIDE,
                                       MAX_SIDE)
    assert bench.describe(info, 1).startswith(f"{NUM_IMAGES} images, mean ")
    results = bench.measure(records, rounds=1)
    lines = bench.table(results).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| per core", "| per machine"]
    payload = bench.payload(info, 1, results)
    benchmark.write_json(out_json, payload)
    written = json.loads(out_json.read_text())
    assert written["machine"]["cores"] >= 1
    for key in ("benchmark", "image_size", "rounds", "images_per_round",
                "data", "peer_parser_args", "threads", "results"):
        assert key in written
    assert written["image_size"] == SIZE
    assert written["images_per_round"] == NUM_IMAGES
    assert written["data"]["generated"] is True
    assert written["peer_parser_args"]["decode_jpeg_only"] is True
    assert set(written["results"]) == set(bench.CONFIGS)
    for entry in written["results"].values():
        for name in (bench.OURS, bench.PEER):
            for key in ("images_per_sec", "images_per_cpu_sec"):
                assert len(entry[name][key]) == 1
                assert entry[name]["median_" + key] > 0
        for ratio, key in (("ratio", "images_per_sec"),
                           ("cpu_ratio", "images_per_cpu_sec")):
            assert entry[ratio] == pytest.approx(
                entry[bench.OURS]["median_" + key]
                / entry[bench.PEER]["median_" + key])
            # One round: its own ratio is the ratio of medians.
            assert entry[ratio + "_paired"] == pytest.approx(entry[ratio])
    assert payload["results"].keys() == written["results"].keys()
    # The written directory is reused, up to the images asked for.
    records, info = bench.load_records(NUM_IMAGES - 2, data_dir)
    assert len(records) == info["num_images"] == NUM_IMAGES - 2
    assert info["generated"] is False


def test_rounds_alternate_which_pipeline_runs_first():
    calls = []
    runners = {name: (lambda name=name: calls.append(name) or len(calls))
               for name in ("a", "b")}
    results = bench.alternating_rounds(runners, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert results == {"a": [1, 4, 5], "b": [2, 3, 6]}


def test_measure_rejects_bad_arguments(records):
    with pytest.raises(ValueError, match="at least 1"):
        bench.measure([], rounds=1)
    with pytest.raises(ValueError, match="config"):
        bench.make_dataset(records, bench.map_fns()[bench.OURS], "bad")
