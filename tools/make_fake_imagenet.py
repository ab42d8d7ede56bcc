"""Writes a small fake ILSVRC2012 manual_dir for TFDS `imagenet2012`.

Usage:
    python tools/make_fake_imagenet.py --out=/tmp/fake_imagenet \\
        --classes=10 --train_per_class=20 --val=50 [--corrupt=2] [--seed=0]

(`--train-per-class` with dashes is accepted too.) The output directory gets
exactly the layout TFDS reads from its manual_dir (see
`tf_lbsgd/data/imagenet_tfds.py`):

- `ILSVRC2012_img_train.tar`: an outer tar of per-synset tars
  `n01440764.tar`, ... for the first `classes` synsets of TFDS's own
  `labels.txt`, each holding `train_per_class` flat JPEGs named like
  `n01440764_10026.JPEG`, plus, spread over the classes, `corrupt` corrupt
  files with a `.JPEG` name (alternately a truncated JPEG and random bytes).
- `ILSVRC2012_img_val.tar`: flat `ILSVRC2012_val_%08d.JPEG` with indices
  1..`val`. TFDS labels the validation files by their rank in sorted order
  with the lines of its `validation_labels.txt`, so a subset of N files always
  gets the labels of the first N lines; the indices 1..N make the file names
  agree with those labels. These labels are spread over all 1,000 classes:
  most are not among the `classes` training synsets.

Images are RGB JPEGs of random size (80..400 px per side by default) whose
content depends on the class (a class colour and a class stripe direction
and frequency) plus noise, so that a model can learn something from them.

Tests import this file by its path (it is not in a package):
    spec = importlib.util.spec_from_file_location("make_fake_imagenet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
Importing it defines no flags; they are defined only when run as a script.
"""

import io
import os
import sys
import tarfile

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
from tensorflow_datasets.datasets.imagenet2012 import (
    imagenet2012_dataset_builder as tfds_imagenet2012)

from tf_lbsgd.data import imagenet_tfds

MIN_SIDE = 80
MAX_SIDE = 400
# Largest id of a training file name "<synset>_<id>.JPEG".
_MAX_FILE_ID = 50000
# Files that TFDS's builder re-encodes by name (CMYK to RGB, PNG to JPEG):
# never generated, so that every fake image goes through the plain path.
_SPECIAL_TRAIN_FILES = frozenset(tfds_imagenet2012.CMYK_IMAGES +
                                 tfds_imagenet2012.PNG_IMAGES)


def _check_args(classes, train_per_class, val, corrupt, min_side, max_side):
    """Raises ValueError naming the first out-of-range argument."""
    if not 1 <= classes <= imagenet_tfds.NUM_CLASSES:
        raise ValueError(f"classes={classes} is not in "
                         f"1..{imagenet_tfds.NUM_CLASSES}")
    if train_per_class < 1:
        raise ValueError(f"train_per_class={train_per_class} must be >= 1")
    if not 1 <= val <= imagenet_tfds.NUM_VALIDATION:
        raise ValueError(f"val={val} is not in "
                         f"1..{imagenet_tfds.NUM_VALIDATION}")
    if corrupt < 0:
        raise ValueError(f"corrupt={corrupt} must be >= 0")
    if not 1 <= min_side <= max_side:
        raise ValueError(f"image sides min_side={min_side}, "
                         f"max_side={max_side} must satisfy "
                         f"1 <= min_side <= max_side")


def class_style(label):
    """Returns the class-dependent drawing parameters of label id `label`.

    Args:
        label: TFDS label id in 0..999.

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
        label: TFDS label id in 0..999; sets colour and stripe pattern.
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


def encode_jpeg(image):
    """Returns the JPEG bytes of uint8 RGB array `image`."""
    return tf.io.encode_jpeg(image, quality=90).numpy()


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
        data = encode_jpeg(make_image(0, rng, MIN_SIDE, MIN_SIDE))
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
    """Writes the outer training tar of per-synset tars.

    Args:
        path: Path of `ILSVRC2012_img_train.tar`.
        synsets: Training synsets; synset i gets label id i's images.
        train_per_class: Number of valid JPEGs per synset.
        corrupt: Total number of corrupt files, dealt round-robin.
        rng: `np.random.Generator`.
        sides: (min_side, max_side) of the images in pixels.

    Returns:
        A tuple (train_files, corrupt_files): {synset: [valid JPEG names]}
        and {corrupt file name: synset}.
    """
    train_files = {}
    corrupt_files = {}
    with tarfile.open(path, mode="w") as outer:
        for label, synset in enumerate(synsets):
            num_corrupt = len(range(label, corrupt, len(synsets)))
            names = _train_file_names(synset, train_per_class + num_corrupt,
                                      rng)
            files = {name: encode_jpeg(make_image(label, rng, *sides))
                     for name in names[:train_per_class]}
            for number, name in zip(range(label, corrupt, len(synsets)),
                                    names[train_per_class:]):
                files[name] = corrupt_jpeg(number, rng)
                corrupt_files[name] = synset
            _add_bytes(outer, f"{synset}.tar", _synset_tar_bytes(files))
            train_files[synset] = names[:train_per_class]
    return train_files, corrupt_files


def _write_val_tar(path, val, rng, sides):
    """Writes the flat validation tar of indices 1..`val`.

    Each image is drawn for its synset in TFDS's `validation_labels.txt`.

    Args:
        path: Path of `ILSVRC2012_img_val.tar`.
        val: Number of validation images.
        rng: `np.random.Generator`.
        sides: (min_side, max_side) of the images in pixels.

    Returns:
        A tuple (file names, synset of each file).
    """
    label_of = {s: i for i, s in enumerate(imagenet_tfds.synset_labels())}
    val_synsets = imagenet_tfds.validation_synsets()[:val]
    names = [imagenet_tfds.validation_file_name(i + 1) for i in range(val)]
    with tarfile.open(path, mode="w") as tar:
        for name, synset in zip(names, val_synsets):
            image = make_image(label_of[synset], rng, *sides)
            _add_bytes(tar, name, encode_jpeg(image))
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
    _check_args(classes, train_per_class, val, corrupt, min_side, max_side)
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


def define_flags(flag_values=flags.FLAGS):
    """Defines the command-line flags of this tool in `flag_values`."""
    flags.DEFINE_string("out", None, "Output manual_dir.",
                        flag_values=flag_values)
    flags.DEFINE_integer("classes", 10, "Number of training classes (the "
                         "first ones of TFDS's labels.txt).",
                         flag_values=flag_values)
    flags.DEFINE_integer("train_per_class", 20, "Valid training JPEGs per "
                         "class.", flag_values=flag_values)
    flags.DEFINE_integer("val", 50, "Validation JPEGs (indices 1..val).",
                         flag_values=flag_values)
    flags.DEFINE_integer("corrupt", 0, "Corrupt JPEGs in the training tars.",
                         flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "Random seed.", flag_values=flag_values)
    flags.mark_flag_as_required("out", flag_values=flag_values)


def dashes_to_underscores(argv):
    """Returns `argv` with "--train-per-class" spelt "--train_per_class"."""
    fixed = []
    for arg in argv:
        if arg.startswith("--") and "-" in arg.split("=")[0][2:]:
            name, sep, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + sep + value
        fixed.append(arg)
    return fixed


def run(flag_values):
    """Writes the fake dataset described by parsed `flag_values`.

    Args:
        flag_values: Parsed `flags.FlagValues` holding the flags of
            `define_flags`.

    Returns:
        The dict returned by `write_fake_imagenet`.
    """
    result = write_fake_imagenet(
        flag_values.out, flag_values.classes, flag_values.train_per_class,
        flag_values.val, corrupt=flag_values.corrupt, seed=flag_values.seed)
    print(f"wrote {result['train_tar']}: {result['num_train']} images of "
          f"{len(result['synsets'])} classes + {result['num_corrupt']} "
          f"corrupt")
    print(f"wrote {result['val_tar']}: {result['num_val']} images")
    return result


def main(argv):
    """Entry point for `app.run`: rejects positional arguments, runs."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    run(flags.FLAGS)


if __name__ == "__main__":
    define_flags()
    app.run(main, argv=dashes_to_underscores(sys.argv))
