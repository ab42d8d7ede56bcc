"""ImageNet training input pipeline: ours vs the Model Garden's, images/s.

Both pipelines do the same work on one serialized `tf.train.Example` of the
Model Garden ImageNet TFRecord layout: parse, decode the JPEG only inside an
Inception-style random crop (8%..100% of the area, aspect ratio 3/4..4/3;
centre crop if none is found), flip left-right at random, bilinear resize to
224 x 224 and normalise with the ImageNet mean/std, giving float32
[224, 224, 3]:

- "ours": `tf_lbsgd.data.imagenet_tfrecord.parse_example` then
  `tf_lbsgd.data.imagenet_preprocessing.preprocess_train`;
- "model_garden": `official.vision.dataloaders.classification_input`'s
  `Decoder().decode` then `Parser(...).parse_fn(is_training=True)`, with the
  `DataConfig` defaults of the Model Garden's ImageNet ResNet experiment
  (`image_classification_imagenet`; no AutoAugment/RandAugment, colour
  jitter, random erasing, three-augment or mixup/cutmix): `PEER_PARSER_ARGS`.

The records are fake ImageNet images of realistic sizes by default (sides of
300..500 px, mean about 400 x 400 like real ImageNet's ~400 x 350), read into
memory once so that file I/O is not measured. Each round maps one pass over
them (a fresh iterator made before the clock starts, drained in-graph); the
two pipelines alternate which runs first (`alternating_rounds`), after one
untimed warm-up pass each. `measure` gives images per wall-clock second and
per CPU second of the process (on a shared machine the wall-clock rate moves
with the other processes' load, the CPU rate less), in two configurations:

- PER_CORE: one thread (a private thread pool of 1, one parallel call; with
  `set_single_threaded` before any op, the consumer only waits);
- PER_MACHINE: a private thread pool of `os.cpu_count()` threads and
  `num_parallel_calls=AUTOTUNE`.
"""

import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf
from official.vision.dataloaders import classification_input

from tf_lbsgd import benchmark
from tf_lbsgd.analysis import tables
from tf_lbsgd.data import fake_imagenet
from tf_lbsgd.data import imagenet_preprocessing
from tf_lbsgd.data import imagenet_tfrecord

IMAGE_SIZE = 224
# Sides of the generated images: about real ImageNet's ~400 x 350 average.
MIN_SIDE = 300
MAX_SIDE = 500
OURS = "ours"
PEER = "model_garden"
# The Model Garden's ImageNet ResNet experiment (`image_classification_
# imagenet`): its `DataConfig` defaults, passed as its task passes them.
PEER_NUM_CLASSES = 1001
PEER_PARSER_ARGS = {
    "decode_jpeg_only": True,
    "aug_rand_hflip": True,
    "aug_crop": True,
    "aug_type": None,
    "color_jitter": 0.0,
    "random_erasing": None,
    "is_multilabel": False,
    "dtype": "float32",
    "crop_area_range": (0.08, 1.0),
    "center_crop_fraction": 0.875,
    "tf_resize_method": "bilinear",
    "three_augment": False,
}
PER_CORE = "per_core"
PER_MACHINE = "per_machine"
CONFIGS = (PER_CORE, PER_MACHINE)
_RATES = ("images_per_sec", "images_per_cpu_sec")


def set_single_threaded():
    """Sets TensorFlow's intra-op and inter-op parallelism to 1 thread.

    Must run before any TensorFlow op (it raises RuntimeError after).
    """
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def write_images(out_dir, num_images, min_side=MIN_SIDE, max_side=MAX_SIDE,
                 seed=0):
    """Writes `num_images` fake ImageNet training records into `out_dir`.

    One image per class for up to 1,000 images (class styles differ), then
    as many per class as needed; one shard, one validation record.

    Returns:
        The training file paths.

    Raises:
        ValueError: if `num_images` < 1.
    """
    if num_images < 1:
        raise ValueError(f"num_images={num_images} must be >= 1")
    classes = min(num_images, 1000)
    per_class = -(-num_images // classes)
    result = fake_imagenet.write_fake_tfrecords(
        out_dir, classes, per_class, val=1, train_shards=1, val_shards=1,
        seed=seed, min_side=min_side, max_side=max_side)
    return result["train_files"]


def read_records(files, num_images):
    """Returns the first `num_images` serialized records of `files`."""
    dataset = tf.data.TFRecordDataset(files).take(num_images)
    return [record.numpy() for record in dataset]


def describe_records(records):
    """Returns count, mean JPEG bytes and mean height/width of `records`."""
    sizes, heights, widths = [], [], []
    for record in records:
        example = tf.train.Example.FromString(record)
        image_bytes = example.features.feature[
            imagenet_tfrecord.IMAGE_KEY].bytes_list.value[0]
        height, width, _ = tf.image.extract_jpeg_shape(image_bytes).numpy()
        sizes.append(len(image_bytes))
        heights.append(int(height))
        widths.append(int(width))
    return {
        "num_images": len(records),
        "mean_jpeg_bytes": float(np.mean(sizes)),
        "mean_height": float(np.mean(heights)),
        "mean_width": float(np.mean(widths)),
    }


def load_records(num_images, data_dir=None, min_side=MIN_SIDE,
                 max_side=MAX_SIDE):
    """Reads (writing them first if needed) the benchmark's records.

    Args:
        num_images: How many records to read (fewer if a reused directory
            holds fewer).
        data_dir: A directory of `train-*-of-*` shards to reuse, or to write
            `num_images` images into if it has none; None for a temporary
            directory, removed once the records are in memory.
        min_side: Smallest side of written images, px.
        max_side: Largest side of written images, px.

    Returns:
        (records: list of serialized examples, info: dict of
        `describe_records` plus "data_dir" (None if temporary), "generated"
        and, if generated, "min_side" and "max_side").
    """
    temp_dir = None
    files = []
    if data_dir:
        files = sorted(tf.io.gfile.glob(
            os.path.join(data_dir, imagenet_tfrecord.TRAIN_PATTERN)))
    try:
        generated = not files
        if generated:
            if not data_dir:
                temp_dir = tempfile.mkdtemp(prefix="bench_input_pipeline_")
            files = write_images(data_dir or temp_dir, num_images, min_side,
                                 max_side)
        records = read_records(files, num_images)
    finally:
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
    info = describe_records(records)
    info.update(data_dir=os.fspath(data_dir) if data_dir else None,
                generated=generated)
    if generated:
        info.update(min_side=min_side, max_side=max_side)
    return records, info


def ours_fn(image_size=IMAGE_SIZE):
    """Ours: serialized example -> (float32 [S, S, 3] image, int32 label)."""
    def parse(serialized):
        image_bytes, label, _ = imagenet_tfrecord.parse_example(
            serialized, label_offset=1)
        image = imagenet_preprocessing.preprocess_train(image_bytes,
                                                        image_size)
        return image, label
    return parse


def peer_fn(image_size=IMAGE_SIZE):
    """Model Garden: the same, by its classification Decoder and Parser."""
    decoder = classification_input.Decoder()
    parser = classification_input.Parser(
        output_size=[image_size, image_size], num_classes=PEER_NUM_CLASSES,
        **PEER_PARSER_ARGS)
    parse = parser.parse_fn(is_training=True)

    def decode_and_parse(serialized):
        return parse(decoder.decode(serialized))
    return decode_and_parse


def map_fns(image_size=IMAGE_SIZE):
    """The compared pipelines: dict name -> serialized -> (image, label)."""
    return {OURS: ours_fn(image_size), PEER: peer_fn(image_size)}


def make_dataset(records, map_fn, config):
    """One pass of `map_fn` over in-memory `records` under `config`.

    Args:
        records: Serialized examples (bytes), already in memory.
        map_fn: serialized -> (image, label).
        config: PER_CORE (one thread) or PER_MACHINE (all cores, AUTOTUNE).

    Returns:
        A finite `tf.data.Dataset` of (image, label).

    Raises:
        ValueError: for another `config`.
    """
    options = tf.data.Options()
    if config == PER_CORE:
        options.threading.private_threadpool_size = 1
        options.threading.max_intra_op_parallelism = 1
        parallel_calls = 1
    elif config == PER_MACHINE:
        options.threading.private_threadpool_size = os.cpu_count() or 1
        parallel_calls = tf.data.AUTOTUNE
    else:
        raise ValueError(f"config must be one of {CONFIGS}, got {config!r}")
    dataset = tf.data.Dataset.from_tensor_slices(
        tf.constant(records, dtype=tf.string))
    dataset = dataset.map(map_fn, num_parallel_calls=parallel_calls)
    return dataset.with_options(options)


@tf.function
def _drain(iterator):
    """Pulls every element of `iterator` in-graph; returns their number.

    No Python and no copy per element (a Python loop over 600 KB images
    costs some 0.3 ms each, more than 5% of the work measured).
    """
    count = tf.constant(0, tf.int64)
    for _ in iterator:
        count += 1
    return count


def time_pass(dataset):
    """Times one pass over `dataset`, from a fresh iterator made before the
    clocks start (its set-up is not timed) and drained in-graph.

    Returns:
        {"images_per_sec": images per wall-clock second,
         "images_per_cpu_sec": images per CPU second of this process}.

    Raises:
        ValueError: if `dataset` is empty.
    """
    iterator = iter(dataset)
    start = time.perf_counter()
    cpu_start = time.process_time()
    count = int(_drain(iterator))
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    if count < 1:
        raise ValueError("cannot time a pass over no images")
    return {"images_per_sec": count / seconds,
            "images_per_cpu_sec": count / max(cpu_seconds, 1e-9)}


def alternating_rounds(runners, rounds):
    """`benchmark.interleaved`, in the runners' order on even rounds and in
    reverse order on odd ones (A B, B A, ...), so that neither pipeline
    always runs first in a round."""
    names = list(runners)
    results = {name: [] for name in names}
    for index in range(rounds):
        order = names if index % 2 == 0 else names[::-1]
        measured = benchmark.interleaved(
            {name: runners[name] for name in order}, 1)
        for name in names:
            results[name].extend(measured[name])
    return results


def _summarize(rounds_of):
    """Per-round rates, their medians and the ours / peer ratios."""
    entry = {}
    for name, measured in rounds_of.items():
        entry[name] = {}
        for key in _RATES:
            values = [m[key] for m in measured]
            entry[name][key] = values
            entry[name]["median_" + key] = benchmark.median(values)
    for ratio, key in (("ratio", "images_per_sec"),
                       ("cpu_ratio", "images_per_cpu_sec")):
        ours, peer = entry[OURS], entry[PEER]
        entry[ratio] = ours["median_" + key] / peer["median_" + key]
        # Median of the rounds' own ratios: robust to slow load drift.
        entry[ratio + "_paired"] = benchmark.median(
            o / p for o, p in zip(ours[key], peer[key]))
    return entry


def measure(records, rounds, configs=CONFIGS, image_size=IMAGE_SIZE):
    """Times ours and the Model Garden's pipeline on `records`, interleaved.

    Args:
        records: Serialized examples in memory (at least 1).
        rounds: Interleaved rounds per configuration.
        configs: Configurations to run (PER_CORE, PER_MACHINE).
        image_size: Output side.

    Returns:
        dict config -> {"ours": {"images_per_sec": [per round],
        "images_per_cpu_sec": [per round], "median_images_per_sec": m,
        "median_images_per_cpu_sec": c}, "model_garden": {...}, "ratio":
        median images/s ours / model_garden, "cpu_ratio": the same of
        images per CPU second, "ratio_paired" and "cpu_ratio_paired": the
        medians of the rounds' own ratios}.

    Raises:
        ValueError: if `records` is empty.
    """
    if not records:
        raise ValueError("need at least 1 record, got none")
    fns = map_fns(image_size)
    results = {}
    for config in configs:
        datasets = {name: make_dataset(records, fn, config)
                    for name, fn in fns.items()}
        for dataset in datasets.values():  # Warm up: trace, first pass.
            time_pass(dataset)
        results[config] = _summarize(alternating_rounds(
            {name: (lambda d=dataset: time_pass(d))
             for name, dataset in datasets.items()}, rounds))
    return results


def describe(info, rounds):
    """One line on the records of `load_records`' `info` and the rounds."""
    return (f"{info['num_images']} images, mean {info['mean_height']:.0f} x "
            f"{info['mean_width']:.0f} px, "
            f"{info['mean_jpeg_bytes'] / 1e3:.1f} KB JPEG; {rounds} rounds")


def table(results):
    """Markdown table of `measure` results.

    "ours / MG" columns are ratios of the medians; "(rounds)" ones the
    medians of the rounds' own ratios.
    """
    threads = {PER_CORE: "1", PER_MACHINE: str(os.cpu_count())}
    rows = [[config.replace("_", " "), threads[config],
             entry[OURS]["median_images_per_sec"],
             entry[PEER]["median_images_per_sec"], entry["ratio"],
             entry["ratio_paired"],
             entry[OURS]["median_images_per_cpu_sec"],
             entry[PEER]["median_images_per_cpu_sec"], entry["cpu_ratio"],
             entry["cpu_ratio_paired"]]
            for config, entry in results.items()]
    return tables.markdown_table(
        ["configuration", "threads", "ours images/s",
         "Model Garden images/s", "ours / MG", "ours / MG (rounds)",
         "ours images/CPU-s", "MG images/CPU-s", "ours / MG (CPU)",
         "ours / MG (CPU, rounds)"], rows)


def payload(info, rounds, results):
    """The JSON record of a run: settings, `info`, `measure` results."""
    return {
        "benchmark": "input_pipeline",
        "description": "ImageNet train preprocessing (parse, decode + "
                       "random crop, flip, bilinear resize, normalise) "
                       "images/s from in-memory records, ours vs Model "
                       "Garden classification_input.Parser; median over "
                       "interleaved rounds",
        "image_size": IMAGE_SIZE,
        "rounds": rounds,
        "images_per_round": info["num_images"],
        "data": info,
        "peer_parser_args": dict(PEER_PARSER_ARGS,
                                 num_classes=PEER_NUM_CLASSES),
        "threads": {PER_CORE: 1, PER_MACHINE: os.cpu_count()},
        "results": results,
    }
