"""Writes a small fake ImageNet in the Model Garden's TFRecord layout.

Usage:
    python tools/make_fake_imagenet_tfrecords.py --out=/tmp/fake_tfrecords \\
        --classes=10 --train_per_class=20 --val=50 --train_shards=4 \\
        --val_shards=2 [--corrupt=2] [--val_corrupt=0] [--seed=0]

(Flag names with dashes are accepted too.) The output directory gets
`train-%05d-of-%05d` and `validation-%05d-of-%05d` TFRecord files that
`tf_lbsgd.data.imagenet_tfrecord` reads (labels stored as 1..classes); see
`tf_lbsgd.data.fake_imagenet` for the layout.
"""

import sys

from absl import app
from absl import flags

from tf_lbsgd import command_line
from tf_lbsgd.data import fake_imagenet

_OUT = flags.DEFINE_string("out", None, "Output directory.", required=True)
_CLASSES = flags.DEFINE_integer("classes", 10, "Number of classes.")
_TRAIN_PER_CLASS = flags.DEFINE_integer(
    "train_per_class", 20, "Valid training images per class.")
_VAL = flags.DEFINE_integer("val", 50, "Valid validation images.")
_TRAIN_SHARDS = flags.DEFINE_integer("train_shards", 4,
                                     "Number of train-* files.")
_VAL_SHARDS = flags.DEFINE_integer("val_shards", 2,
                                   "Number of validation-* files.")
_CORRUPT = flags.DEFINE_integer("corrupt", 0, "Corrupt training records.")
_VAL_CORRUPT = flags.DEFINE_integer("val_corrupt", 0,
                                    "Corrupt validation records.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")


def main(argv):
    """Writes the fake dataset and prints what was written."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = fake_imagenet.write_fake_tfrecords(
        _OUT.value, _CLASSES.value, _TRAIN_PER_CLASS.value, _VAL.value,
        _TRAIN_SHARDS.value, _VAL_SHARDS.value, corrupt=_CORRUPT.value,
        val_corrupt=_VAL_CORRUPT.value, seed=_SEED.value)
    print(f"wrote {len(result['train_files'])} train files: "
          f"{result['num_train']} images + {result['num_corrupt']} corrupt")
    print(f"wrote {len(result['val_files'])} validation files: "
          f"{result['num_val']} images + {result['num_val_corrupt']} corrupt")


if __name__ == "__main__":
    app.run(main, argv=command_line.dashes_to_underscores(sys.argv))
