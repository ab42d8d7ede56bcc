"""Builds TFDS imagenet2012 offline from the ILSVRC2012 tars.

    python tools/build_imagenet_tfds.py --data_dir=/data/tfds \\
        --manual_dir=/data/imagenet-tars

manual_dir must hold ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar as
downloaded from image-net.org; the prepared data set lands in
<data_dir>/imagenet2012/<version>. Nothing is downloaded.
"""

from absl import app
from absl import flags

from tf_lbsgd.data import imagenet_tfds

_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory.",
                                required=True)
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Directory holding the two ILSVRC2012 tars.",
    required=True)


def main(argv):
    del argv
    try:
        builder = imagenet_tfds.build_imagenet2012(_DATA_DIR.value,
                                                   _MANUAL_DIR.value)
    except FileNotFoundError as e:
        print(f"build_imagenet_tfds: error: {e}")
        return 1
    splits = builder.info.splits
    print(f"built {builder.data_dir}: {splits['train'].num_examples} train, "
          f"{splits['validation'].num_examples} validation examples")
    return 0


if __name__ == "__main__":
    app.run(main)
