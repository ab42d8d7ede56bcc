"""Writes a small fake ImageNet in the Model Garden's TFRecord layout.

Usage:
    python tools/make_fake_imagenet_tfrecords.py --out=/tmp/fake_tfrecords \\
        --classes=10 --train_per_class=20 --val=50 --train_shards=4 \\
        --val_shards=2 [--corrupt=2] [--val_corrupt=0] [--seed=0]

The output directory gets `train-%05d-of-%05d` and `validation-%05d-of-%05d`
TFRecord files of `tf.train.Example` with `image/encoded` (JPEG bytes) and
`image/class/label` (int64, label id + 1: the Model Garden's 1..1000
convention, read by `tf_lbsgd.data.imagenet_tfrecord` with its default
`label_offset=1`). Training examples are class i's images for i in
0..classes-1; validation example j has class j % classes. The records are
shuffled and dealt round-robin over the shards. `corrupt` (`val_corrupt`)
extra training (validation) records hold corrupt bytes (alternately a
truncated JPEG and random bytes) with a valid label.

Images come from `tools/make_fake_imagenet.py` (`make_image`,
`corrupt_jpeg`), imported by its path. Importing this file defines no flags.
"""

import importlib.util
import os
import pathlib
import sys

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf


def _load_make_fake_imagenet():
    """Returns the module of tools/make_fake_imagenet.py, imported by path."""
    path = pathlib.Path(__file__).resolve().parent / "make_fake_imagenet.py"
    spec = importlib.util.spec_from_file_location("make_fake_imagenet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_fake = _load_make_fake_imagenet()
MIN_SIDE = _fake.MIN_SIDE
MAX_SIDE = _fake.MAX_SIDE
LABEL_OFFSET = 1


def _check_args(classes, train_per_class, val, train_shards, val_shards,
                corrupt, val_corrupt):
    """Raises ValueError naming the first out-of-range argument."""
    if not 1 <= classes <= 1000:
        raise ValueError(f"classes={classes} is not in 1..1000")
    for name, value in (("train_per_class", train_per_class), ("val", val),
                        ("train_shards", train_shards),
                        ("val_shards", val_shards)):
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1")
    for name, value in (("corrupt", corrupt), ("val_corrupt", val_corrupt)):
        if value < 0:
            raise ValueError(f"{name}={value} must be >= 0")


def make_example(image_bytes, label):
    """Returns a serialized `tf.train.Example` of one image.

    Args:
        image_bytes: The encoded image.
        label: Label id 0..999; stored as `label + 1`.

    Returns:
        The serialized example (bytes).
    """
    feature = {
        "image/encoded": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[image_bytes])),
        "image/class/label": tf.train.Feature(
            int64_list=tf.train.Int64List(value=[label + LABEL_OFFSET])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


def _records(labels, num_corrupt, rng, sides):
    """Returns shuffled (example, label, is_corrupt) of valid + corrupt images.

    Corrupt record k gets label `labels[k % len(labels)]`.
    """
    records = [(make_example(_fake.encode_jpeg(_fake.make_image(
        label, rng, *sides)), label), label, False) for label in labels]
    for index in range(num_corrupt):
        label = labels[index % len(labels)]
        records.append((make_example(_fake.corrupt_jpeg(index, rng), label),
                        label, True))
    order = rng.permutation(len(records))
    return [records[i] for i in order]


def _write_shards(out_dir, split, records, num_shards):
    """Deals `records` round-robin over `num_shards` files; returns paths."""
    paths = [os.path.join(out_dir, f"{split}-{i:05d}-of-{num_shards:05d}")
             for i in range(num_shards)]
    for shard, path in enumerate(paths):
        with tf.io.TFRecordWriter(path) as writer:
            for example, _, _ in records[shard::num_shards]:
                writer.write(example)
    return paths


def write_fake_tfrecords(out_dir, classes, train_per_class, val, train_shards,
                         val_shards, corrupt=0, val_corrupt=0, seed=0,
                         min_side=MIN_SIDE, max_side=MAX_SIDE):
    """Writes fake ImageNet TFRecords in the Model Garden layout.

    Args:
        out_dir: Output directory, created if needed; existing shards of the
            same names are overwritten.
        classes: Number C of classes (label ids 0..C-1, stored as 1..C).
        train_per_class: Valid training images per class.
        val: Valid validation images; image j has class j % C.
        train_shards: Number of `train-*` files.
        val_shards: Number of `validation-*` files.
        corrupt: Extra corrupt training records.
        val_corrupt: Extra corrupt validation records.
        seed: Seed of the images and the record order.
        min_side: Smallest image height or width in pixels.
        max_side: Largest image height or width in pixels.

    Returns:
        A dict with keys "train_files", "val_files" (paths), "train_labels",
        "val_labels" (label ids 0..C-1 of the valid images, in file order),
        "num_train", "num_val" (valid images), "num_corrupt",
        "num_val_corrupt".

    Raises:
        ValueError: naming an out-of-range argument.
    """
    _check_args(classes, train_per_class, val, train_shards, val_shards,
                corrupt, val_corrupt)
    rng = np.random.default_rng(seed)
    sides = (min_side, max_side)
    os.makedirs(out_dir, exist_ok=True)
    train = _records([c for c in range(classes)
                      for _ in range(train_per_class)], corrupt, rng, sides)
    valid = _records([j % classes for j in range(val)], val_corrupt, rng,
                     sides)
    return {
        "train_files": _write_shards(out_dir, "train", train, train_shards),
        "val_files": _write_shards(out_dir, "validation", valid, val_shards),
        "train_labels": [label for _, label, bad in train if not bad],
        "val_labels": [label for _, label, bad in valid if not bad],
        "num_train": classes * train_per_class,
        "num_val": val,
        "num_corrupt": corrupt,
        "num_val_corrupt": val_corrupt,
    }


def define_flags(flag_values=flags.FLAGS):
    """Defines the command-line flags of this tool in `flag_values`."""
    flags.DEFINE_string("out", None, "Output directory.",
                        flag_values=flag_values)
    flags.DEFINE_integer("classes", 10, "Number of classes.",
                         flag_values=flag_values)
    flags.DEFINE_integer("train_per_class", 20, "Valid training images per "
                         "class.", flag_values=flag_values)
    flags.DEFINE_integer("val", 50, "Valid validation images.",
                         flag_values=flag_values)
    flags.DEFINE_integer("train_shards", 4, "Number of train-* files.",
                         flag_values=flag_values)
    flags.DEFINE_integer("val_shards", 2, "Number of validation-* files.",
                         flag_values=flag_values)
    flags.DEFINE_integer("corrupt", 0, "Corrupt training records.",
                         flag_values=flag_values)
    flags.DEFINE_integer("val_corrupt", 0, "Corrupt validation records.",
                         flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "Random seed.", flag_values=flag_values)
    flags.mark_flag_as_required("out", flag_values=flag_values)


def run(flag_values):
    """Writes the fake dataset described by parsed `flag_values`.

    Args:
        flag_values: Parsed `flags.FlagValues` holding the flags of
            `define_flags`.

    Returns:
        The dict returned by `write_fake_tfrecords`.
    """
    result = write_fake_tfrecords(
        flag_values.out, flag_values.classes, flag_values.train_per_class,
        flag_values.val, flag_values.train_shards, flag_values.val_shards,
        corrupt=flag_values.corrupt, val_corrupt=flag_values.val_corrupt,
        seed=flag_values.seed)
    print(f"wrote {len(result['train_files'])} train files: "
          f"{result['num_train']} images + {result['num_corrupt']} corrupt")
    print(f"wrote {len(result['val_files'])} validation files: "
          f"{result['num_val']} images + {result['num_val_corrupt']} corrupt")
    return result


def main(argv):
    """Entry point for `app.run`: rejects positional arguments, runs."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run(flags.FLAGS)


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=_fake.dashes_to_underscores(sys.argv))
