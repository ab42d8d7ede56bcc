"""Writes a small fake ILSVRC2012 manual_dir for TFDS `imagenet2012`.

Usage:
    python tools/make_fake_imagenet.py --out=/tmp/fake_imagenet \\
        --classes=10 --train_per_class=20 --val=50 [--corrupt=2] [--seed=0]

(`--train-per-class` with dashes is accepted too.) The output directory gets
the two archives of the ILSVRC2012 release, `ILSVRC2012_img_train.tar` (real
synset names, `corrupt` corrupt JPEGs among the training files) and
`ILSVRC2012_img_val.tar`; see `tf_lbsgd.data.fake_imagenet` for the layout.
"""

import sys

from absl import app
from absl import flags

from tf_lbsgd import command_line
from tf_lbsgd.data import fake_imagenet

_OUT = flags.DEFINE_string("out", None, "Output manual_dir.", required=True)
_CLASSES = flags.DEFINE_integer(
    "classes", 10, "Number of training classes (the first ones of TFDS's "
    "labels.txt).")
_TRAIN_PER_CLASS = flags.DEFINE_integer(
    "train_per_class", 20, "Valid training JPEGs per class.")
_VAL = flags.DEFINE_integer("val", 50, "Validation JPEGs (indices 1..val).")
_CORRUPT = flags.DEFINE_integer("corrupt", 0,
                                "Corrupt JPEGs in the training tars.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")


def main(argv):
    """Writes the fake dataset and prints what was written."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = fake_imagenet.write_fake_imagenet(
        _OUT.value, _CLASSES.value, _TRAIN_PER_CLASS.value, _VAL.value,
        corrupt=_CORRUPT.value, seed=_SEED.value)
    print(f"wrote {result['train_tar']}: {result['num_train']} images of "
          f"{len(result['synsets'])} classes + {result['num_corrupt']} "
          f"corrupt")
    print(f"wrote {result['val_tar']}: {result['num_val']} images")


if __name__ == "__main__":
    app.run(main, argv=command_line.dashes_to_underscores(sys.argv))
