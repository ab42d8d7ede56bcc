"""A small fake ImageNet, in the ILSVRC2012 tar layout or as TFRecords.

Images: an image of class `label` is an RGB JPEG of random size whose content
depends on the class (a colour, a stripe direction and a stripe period) plus
noise, so that a model can learn something from it. A corrupt file is
alternately a JPEG cut in half and random bytes: both fail to decode.

`write_fake_imagenet` writes exactly the manual_dir layout TFDS
`imagenet2012` reads (see `tf_lbsgd.data.imagenet_tfds`):

- `ILSVRC2012_img_train.tar`: an outer tar of per-synset tars `n01440764.tar`,
  ... for the first `classes` synsets of TFDS's own `labels.txt`, each holding
  `train_per_class` flat JPEGs named like `n01440764_10026.JPEG`, plus, spread
  over the classes, `corrupt` corrupt files with a `.JPEG` name.
- `ILSVRC2012_img_val.tar`: flat `ILSVRC2012_val_%08d.JPEG` with indices
  1..`val`. TFDS labels the validation files by their rank in sorted order
  with the lines of its `validation_labels.txt`, so a subset of N files always
  gets the labels of the first N lines; the indices 1..N make the file names
  agree with those labels. These labels are spread over all 1,000 classes:
  most are not among the `classes` training synsets.

`write_fake_tfrecords` writes the Model Garden's layout that
`tf_lbsgd.data.imagenet_tfrecord` reads: shuffled records dealt round-robin
over `train-%05d-of-%05d` and `validation-%05d-of-%05d` TFRecord files of
`tf.train.Example` with `image/encoded` (JPEG bytes) and `image/class/label`
(int64, label id + 1: the Model Garden's 1..1000, the reader's default
`label_offset=1`).
"""

import io
import os
import tarfile

import numpy as np
import tensorflow as tf
from tensorflow_datasets.datasets.imagenet2012 import (
    imagenet2012_dataset_builder as tfds_imagenet2012)

from tf_lbsgd.data import imagenet_tfds

MIN_SIDE = 80
MAX_SIDE = 400
LABEL_OFFSET = 1  # Stored TFRecord label = label id + LABEL_OFFSET.
# The features `imagenet_tfrecord` reads (not imported from there: it loads
# the Model Garden, seconds that the tools would pay at every start).
_IMAGE_KEY = "image/encoded"
_LABEL_KEY = "image/class/label"
_JPEG_QUALITY = 90
# Largest id of a training file name "<synset>_<id>.JPEG".
_MAX_FILE_ID = 50000
# Files that TFDS's builder re-encodes by name (CMYK to RGB, PNG to JPEG):
# never generated, so that every fake image goes through the plain path.
_SPECIAL_TRAIN_FILES = frozenset(tfds_imagenet2012.CMYK_IMAGES +
                                 tfds_imagenet2012.PNG_IMAGES)


def _check_counts(bounds):
    """Raises ValueError naming the first value outside its range.

    Args:
        bounds: {name: (value, lowest, highest)}, checked in order; `highest`
            None means no upper bound.

    Raises:
        ValueError: e.g. "classes=0 must be in 1..1000".
    """
    for name, (value, lowest, highest) in bounds.items():
        if value < lowest or (highest is not None and value > highest):
            allowed = (f">= {lowest}" if highest is None
                       else f"in {lowest}..{highest}")
            raise ValueError(f"{name}={value} must be {allowed}")


def class_style(label):
    """Returns the class-dependent drawing parameters of label id `label`.

    Args:
        label: Label id in 0..999.

    Returns:
        A tuple (rgb colour as a float array of 3 values in 0..255, stripe
        angle in radians, stripe period in pixels).
    """
    hue = (label * 0.618033988749895) % 1.0
    phases = hue + np.array([0.0, 1.0 / 3.0, 2.0 / 3.0])
    colour = 128.0 + 100.0 * np.cos(2.0 * np.pi * phases)
    angle = (label % 8) * np.pi / 8.0
    period = 8.0 + 4.0 * ((label // 8) % 6)
    return colour, angle, period


def make_image(label, rng, min_side=MIN_SIDE, max_side=MAX_SIDE):
    """Returns a random RGB image of class `label` with a random size.

    Args:
        label: Label id in 0..999; sets colour and stripe pattern.
        rng: `np.random.Generator` for the size, phase and noise.
        min_side: Smallest height or width in pixels.
        max_side: Largest height or width in pixels.

    Returns:
        A uint8 array of shape (height, width, 3).
    """
    height, width = rng.integers(min_side, max_side + 1, size=2)
    colour, angle, period = class_style(label)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0.0, 2.0 * np.pi)
    position = rows * np.sin(angle) + cols * np.cos(angle)
    stripes = np.sin(2.0 * np.pi * position / period + phase)
    image = colour * (0.75 + 0.25 * stripes[..., None])
    image += rng.normal(0.0, 12.0, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_jpeg(label, rng, min_side=MIN_SIDE, max_side=MAX_SIDE):
    """Returns the JPEG bytes of `make_image(label, rng, min_side, max_side)`."""
    image = make_image(label, rng, min_side, max_side)
    return tf.io.encode_jpeg(image, quality=_JPEG_QUALITY).numpy()


def corrupt_jpeg(index, rng):
    """Returns the bytes of corrupt file number `index`.

    Args:
        index: 0-based number of the corrupt file: even numbers give a JPEG
            cut to half its length, odd numbers random bytes.
        rng: `np.random.Generator`.

    Returns:
        Bytes that `tf.io.decode_image` rejects.
    """
    if index % 2 == 0:
        data = make_jpeg(0, rng, MIN_SIDE, MIN_SIDE)
        return data[:len(data) // 2]
    return rng.integers(0, 256, size=1000, dtype=np.uint8).tobytes()


def _add_bytes(tar, name, data):
    """Adds a regular file `name` with content `data` to open tar `tar`."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _train_file_names(synset, count, rng):
    """Returns `count` distinct random names "<synset>_<id>.JPEG"."""
    names = []
    for file_id in rng.permutation(_MAX_FILE_ID) + 1:
        name = f"{synset}_{file_id}.JPEG"
        if name not in _SPECIAL_TRAIN_FILES:
            names.append(name)
        if len(names) == count:
            return names
    raise ValueError(f"count={count} exceeds the {_MAX_FILE_ID} file ids")


def _synset_tar_bytes(files):
    """Returns the bytes of an uncompressed tar of {name: data} `files`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            _add_bytes(tar, name, data)
    return buffer.getvalue()


def _write_train_tar(path, synsets, train_per_class, corrupt, rng, sides):
    """Writes the outer training tar at `path`: a tar per synset, synset i
    with `train_per_class` images of label id i, `corrupt` corrupt files
    dealt round-robin; returns ({synset: [valid JPEG names]},
    {corrupt file name: synset})."""
    train_files = {}
    corrupt_files = {}
    with tarfile.open(path, mode="w") as outer:
        for label, synset in enumerate(synsets):
            numbers = range(label, corrupt, len(synsets))
            names = _train_file_names(synset, train_per_class + len(numbers),
                                      rng)
            files = {name: make_jpeg(label, rng, *sides)
                     for name in names[:train_per_class]}
            for number, name in zip(numbers, names[train_per_class:]):
                files[name] = corrupt_jpeg(number, rng)
                corrupt_files[name] = synset
            _add_bytes(outer, f"{synset}.tar", _synset_tar_bytes(files))
            train_files[synset] = names[:train_per_class]
    return train_files, corrupt_files


def _write_val_tar(path, val, rng, sides):
    """Writes the flat validation tar of indices 1..`val` at `path`, each
    image drawn for its synset in TFDS's `validation_labels.txt`; returns
    (file names, synset of each file)."""
    label_of = {s: i for i, s in enumerate(imagenet_tfds.synset_labels())}
    val_synsets = imagenet_tfds.validation_synsets()[:val]
    names = [imagenet_tfds.validation_file_name(i + 1) for i in range(val)]
    with tarfile.open(path, mode="w") as tar:
        for name, synset in zip(names, val_synsets):
            _add_bytes(tar, name, make_jpeg(label_of[synset], rng, *sides))
    return names, val_synsets


def write_fake_imagenet(out_dir, classes, train_per_class, val, corrupt=0,
                        seed=0, min_side=MIN_SIDE, max_side=MAX_SIDE):
    """Writes a fake ILSVRC2012 manual_dir for TFDS `imagenet2012`.

    Args:
        out_dir: Output directory, created if needed; existing archives in it
            are overwritten.
        classes: Number C of training classes: the first C synsets of TFDS's
            `labels.txt` (label ids 0..C-1).
        train_per_class: Number of valid training JPEGs per class.
        val: Number N of validation JPEGs, indices 1..N (labels: the first N
            lines of TFDS's `validation_labels.txt`).
        corrupt: Number of corrupt `.JPEG` files added to the training tars,
            spread round-robin over the classes.
        seed: Seed of the random images and file names.
        min_side: Smallest image height or width in pixels.
        max_side: Largest image height or width in pixels.

    Returns:
        A dict with keys
            "train_tar", "val_tar": paths of the two archives;
            "synsets": the C training synsets, in label-id order;
            "train_files": {synset: [valid JPEG names]};
            "corrupt_files": {corrupt file name: synset};
            "val_files": validation file names, sorted;
            "val_synsets": synset of each entry of "val_files";
            "num_train", "num_corrupt", "num_val": the counts.

    Raises:
        ValueError: naming an out-of-range argument.
    """
    _check_counts({
        "classes": (classes, 1, imagenet_tfds.NUM_CLASSES),
        "train_per_class": (train_per_class, 1, None),
        "val": (val, 1, imagenet_tfds.NUM_VALIDATION),
        "corrupt": (corrupt, 0, None),
        "min_side": (min_side, 1, max_side),
    })
    rng = np.random.default_rng(seed)
    sides = (min_side, max_side)
    os.makedirs(out_dir, exist_ok=True)
    synsets = imagenet_tfds.synset_labels()[:classes]
    train_tar = os.path.join(out_dir, imagenet_tfds.TRAIN_TAR)
    val_tar = os.path.join(out_dir, imagenet_tfds.VAL_TAR)
    train_files, corrupt_files = _write_train_tar(
        train_tar, synsets, train_per_class, corrupt, rng, sides)
    val_files, val_synsets = _write_val_tar(val_tar, val, rng, sides)
    return {
        "train_tar": train_tar,
        "val_tar": val_tar,
        "synsets": synsets,
        "train_files": train_files,
        "corrupt_files": corrupt_files,
        "val_files": val_files,
        "val_synsets": val_synsets,
        "num_train": classes * train_per_class,
        "num_corrupt": corrupt,
        "num_val": val,
    }


def make_example(image_bytes, label):
    """Returns a serialized `tf.train.Example` of one image.

    Args:
        image_bytes: The encoded image.
        label: Label id 0..999; stored as `label + LABEL_OFFSET`.

    Returns:
        The serialized example (bytes).
    """
    feature = {
        _IMAGE_KEY: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[image_bytes])),
        _LABEL_KEY: tf.train.Feature(
            int64_list=tf.train.Int64List(value=[label + LABEL_OFFSET])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


def _records(labels, num_corrupt, rng, sides):
    """Returns shuffled (example, label, is_corrupt) of valid + corrupt images.

    Corrupt record k gets label `labels[k % len(labels)]`.
    """
    records = [(make_example(make_jpeg(label, rng, *sides), label), label,
                False) for label in labels]
    for index in range(num_corrupt):
        label = labels[index % len(labels)]
        records.append((make_example(corrupt_jpeg(index, rng), label), label,
                        True))
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
    _check_counts({
        "classes": (classes, 1, imagenet_tfds.NUM_CLASSES),
        "train_per_class": (train_per_class, 1, None),
        "val": (val, 1, None),
        "train_shards": (train_shards, 1, None),
        "val_shards": (val_shards, 1, None),
        "corrupt": (corrupt, 0, None),
        "val_corrupt": (val_corrupt, 0, None),
        "min_side": (min_side, 1, max_side),
    })
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
