"""ImageNet (ILSVRC2012) through TFDS `imagenet2012`, built offline.

TFDS builds it from a manual_dir holding the release's two archives:
`ILSVRC2012_img_train.tar` (an outer tar of 1,000 per-synset tars, the label
of an image being its inner tar's synset) and `ILSVRC2012_img_val.tar`
(50,000 flat JPEGs `ILSVRC2012_val_%08d.JPEG`). Label ids are the 0-based
lines of TFDS's `labels.txt`; TFDS gives the i-th validation file in sorted
order the synset on line i of `validation_labels.txt`, so a subset of N files
holds the labels of the first N lines. Nothing is downloaded or
checksum-verified (`try_download_gcs=False`). TFDS stores each JPEG's bytes
undecoded, so a corrupt JPEG fails only when read (decode with
`tfds.decode.SkipDecoding()` to handle it).
"""

import importlib.resources
import os

import tensorflow_datasets as tfds

DATASET_NAME = "imagenet2012"
TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
NUM_CLASSES = 1000
NUM_VALIDATION = 50000
VAL_FILE_FORMAT = "ILSVRC2012_val_%08d.JPEG"

# Package and file names of TFDS's own label lists.
_TFDS_IMAGENET_PACKAGE = "tensorflow_datasets.datasets.imagenet2012"
_LABELS_FILE = "labels.txt"
_VALIDATION_LABELS_FILE = "validation_labels.txt"


def _read_tfds_lines(file_name, expected_count):
    """Returns the non-empty lines of one of TFDS's imagenet2012 files.

    Args:
        file_name: Name of the file inside the installed
            `tensorflow_datasets/datasets/imagenet2012` package directory.
        expected_count: Number of lines the file must have.

    Returns:
        The list of stripped lines.

    Raises:
        ValueError: if the file does not have `expected_count` lines.
    """
    resource = importlib.resources.files(_TFDS_IMAGENET_PACKAGE) / file_name
    lines = resource.read_text().split()
    if len(lines) != expected_count:
        raise ValueError(f"{resource} has {len(lines)} entries, expected "
                         f"{expected_count}")
    return lines


def synset_labels():
    """Returns TFDS's 1,000 ImageNet synsets; label id i is entry i.

    Returns:
        A list of WordNet ids such as "n01440764", in label-id order.
    """
    return _read_tfds_lines(_LABELS_FILE, NUM_CLASSES)


def validation_synsets():
    """Returns the synsets of the 50,000 validation images, by file index.

    Returns:
        A list whose entry i is the synset of `ILSVRC2012_val_%08d.JPEG` with
        index i + 1 in the full validation set.
    """
    return _read_tfds_lines(_VALIDATION_LABELS_FILE, NUM_VALIDATION)


def validation_file_name(index):
    """Returns the file name of the validation image with 1-based `index`.

    Args:
        index: Index in 1..50,000.

    Returns:
        The name, e.g. "ILSVRC2012_val_00000001.JPEG".

    Raises:
        ValueError: if `index` is out of range.
    """
    if not 1 <= index <= NUM_VALIDATION:
        raise ValueError(f"validation index {index} is not in "
                         f"1..{NUM_VALIDATION}")
    return VAL_FILE_FORMAT % index


def check_manual_dir(manual_dir):
    """Checks that `manual_dir` holds both ILSVRC2012 archives.

    Args:
        manual_dir: Directory expected to hold `ILSVRC2012_img_train.tar`
            and `ILSVRC2012_img_val.tar`.

    Returns:
        A dict {"train": path, "validation": path} of the two archives.

    Raises:
        FileNotFoundError: naming the missing archives and where to put them.
    """
    paths = {
        "train": os.path.join(manual_dir, TRAIN_TAR),
        "validation": os.path.join(manual_dir, VAL_TAR),
    }
    missing = [path for path in paths.values() if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(
            f"ImageNet archives not found: {', '.join(missing)}. Put "
            f"{TRAIN_TAR} and {VAL_TAR} of the ILSVRC2012 release (from "
            f"https://image-net.org/download-images) into the manual_dir "
            f"{manual_dir!r}, or generate a small fake with "
            f"tools/make_fake_imagenet.py --out={manual_dir}.")
    return paths


def _is_prepared(builder):
    """Returns whether `builder`'s dataset has been prepared.

    Like `builder.is_prepared()`, without its warning when the version
    directory does not exist yet. TFDS writes `dataset_info.json` last and
    renames the directory on success, so its presence means a complete build.
    """
    return (builder.data_path / "dataset_info.json").exists()


def build_imagenet2012(data_dir, manual_dir):
    """Builds TFDS `imagenet2012` from the archives in `manual_dir`, offline.

    If the dataset is already prepared under `data_dir`, it is reused and the
    archives are not needed.

    Args:
        data_dir: TFDS data directory that receives
            `imagenet2012/<version>/`; None for TFDS's default (the
            `TFDS_DATA_DIR` environment variable, else
            `~/tensorflow_datasets`).
        manual_dir: Directory holding `ILSVRC2012_img_train.tar` and
            `ILSVRC2012_img_val.tar`.

    Returns:
        The prepared `tfds.core.DatasetBuilder`; read it with
        `builder.as_dataset(split="train")` or `split="validation"`.

    Raises:
        FileNotFoundError: if the dataset is not prepared yet and an archive
            is missing from `manual_dir`.
    """
    builder = tfds.builder(DATASET_NAME, data_dir=data_dir)
    if _is_prepared(builder):
        return builder
    check_manual_dir(manual_dir)
    download_config = tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir), try_download_gcs=False)
    builder.download_and_prepare(download_config=download_config)
    return builder
