"""The fake ILSVRC2012 of `tf_lbsgd.data.fake_imagenet` through real TFDS.

A tiny fake (3 classes x 4 training JPEGs + 1 corrupt, 6 validation JPEGs) is
written once per module and built offline into TFDS `imagenet2012` by
`tf_lbsgd.data.imagenet_tfds.build_imagenet2012` (about a second). The
command-line tool tools/make_fake_imagenet.py runs once, in a subprocess.
"""

import io
import os
import pathlib
import re
import subprocess
import sys
import tarfile

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_lbsgd import command_line
from tf_lbsgd.data import fake_imagenet
from tf_lbsgd.data import imagenet_tfds

# abspath, not resolve(): under Bazel the test file is a symlink into the
# checkout, and the tool must come from the runfiles next to it.
TOOL_PATH = (pathlib.Path(os.path.abspath(__file__)).parents[1] / "tools"
             / "make_fake_imagenet.py")
CLASSES = 3
TRAIN_PER_CLASS = 4
VAL = 6
CORRUPT = 1


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """Writes the fake manual_dir; returns (manual_dir, result dict)."""
    manual_dir = tmp_path_factory.mktemp("manual")
    result = fake_imagenet.write_fake_imagenet(
        manual_dir, CLASSES, TRAIN_PER_CLASS, VAL, corrupt=CORRUPT, seed=3)
    return manual_dir, result


@pytest.fixture(scope="module")
def built(fake, tmp_path_factory):
    """Builds TFDS imagenet2012 from the fake; returns (data_dir, builder)."""
    manual_dir, _ = fake
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = imagenet_tfds.build_imagenet2012(data_dir, manual_dir)
    return data_dir, builder


def _tar_members(path):
    """Returns the (name, bytes) of the regular files of tar `path`."""
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()
                if m.isfile()]


def _raw_examples(builder, split):
    """Returns the examples of `split` with undecoded image bytes."""
    dataset = builder.as_dataset(
        split=split, decoders={"image": tfds.decode.SkipDecoding()})
    return [{key: value.numpy() for key, value in example.items()}
            for example in dataset]


def test_labels_files_come_from_tfds():
    synsets = imagenet_tfds.synset_labels()
    assert len(synsets) == 1000 and len(set(synsets)) == 1000
    assert synsets[0] == "n01440764"
    assert all(re.fullmatch(r"n\d{8}", s) for s in synsets)
    assert set(imagenet_tfds.validation_synsets()) == set(synsets)


def test_train_tar_layout(fake):
    manual_dir, result = fake
    assert sorted(os.listdir(manual_dir)) == [imagenet_tfds.TRAIN_TAR,
                                              imagenet_tfds.VAL_TAR]
    synsets = imagenet_tfds.synset_labels()[:CLASSES]
    outer = _tar_members(result["train_tar"])
    assert [name for name, _ in outer] == [f"{s}.tar" for s in synsets]
    assert result["synsets"] == synsets
    corrupt_seen = 0
    for (name, data), synset in zip(outer, synsets):
        inner_path = manual_dir / name
        inner_path.write_bytes(data)
        inner = [n for n, _ in _tar_members(inner_path)]
        inner_path.unlink()
        assert all(re.fullmatch(rf"{synset}_\d+\.JPEG", n) for n in inner)
        assert len(set(inner)) == len(inner)
        valid = set(result["train_files"][synset])
        assert len(valid) == TRAIN_PER_CLASS and valid <= set(inner)
        corrupt_seen += len(inner) - len(valid)
    assert corrupt_seen == CORRUPT == len(result["corrupt_files"])


def test_val_tar_layout(fake):
    _, result = fake
    names = [name for name, _ in _tar_members(result["val_tar"])]
    expected = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, VAL + 1)]
    assert names == expected == result["val_files"]
    assert result["val_synsets"] == imagenet_tfds.validation_synsets()[:VAL]


def test_corrupt_files_do_not_decode(fake):
    _, result = fake
    (name, synset), = result["corrupt_files"].items()
    assert re.fullmatch(rf"{synset}_\d+\.JPEG", name)
    outer = dict(_tar_members(result["train_tar"]))
    with tarfile.open(fileobj=io.BytesIO(outer[f"{synset}.tar"])) as tar:
        data = tar.extractfile(name).read()
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_image(data, channels=3)


def test_bad_arguments_name_the_value(tmp_path):
    with pytest.raises(ValueError, match="classes=0"):
        fake_imagenet.write_fake_imagenet(tmp_path, 0, 1, 1)
    with pytest.raises(ValueError, match="val=50001"):
        fake_imagenet.write_fake_imagenet(tmp_path, 1, 1, 50001)
    with pytest.raises(ValueError, match="corrupt=-1"):
        fake_imagenet.write_fake_imagenet(tmp_path, 1, 1, 1, corrupt=-1)
    with pytest.raises(ValueError, match=r"min_side=90 must be in 1\.\.80"):
        fake_imagenet.write_fake_imagenet(tmp_path, 1, 1, 1, min_side=90,
                                          max_side=80)
    assert not os.listdir(tmp_path)


def test_train_split(built, fake):
    _, builder = built
    _, result = fake
    synsets = imagenet_tfds.synset_labels()
    examples = _raw_examples(builder, "train")
    # Corrupt JPEGs are stored as they are: the build neither fails nor
    # drops them.
    assert builder.info.splits["train"].num_examples == len(examples)
    assert len(examples) == CLASSES * TRAIN_PER_CLASS + CORRUPT
    expected = {name: synset for synset, names in result["train_files"].items()
                for name in names}
    expected.update(result["corrupt_files"])
    got = {e["file_name"].decode(): e["label"] for e in examples}
    assert got == {name: synsets.index(s) for name, s in expected.items()}
    assert set(got.values()) == set(range(CLASSES))


def test_train_split_decoding_fails_on_corrupt_images(built):
    _, builder = built
    with pytest.raises(tf.errors.InvalidArgumentError):
        for _ in builder.as_dataset(split="train"):
            pass
    decoded = list(builder.as_dataset(split="train").ignore_errors())
    assert len(decoded) == CLASSES * TRAIN_PER_CLASS
    shapes = {tuple(example["image"].shape) for example in decoded}
    assert len(shapes) > 1
    assert all(80 <= h <= 400 and 80 <= w <= 400 and c == 3
               for h, w, c in shapes)


def test_validation_split_with_tfds_load(built):
    data_dir, _ = built
    dataset = tfds.load("imagenet2012", split="validation",
                        data_dir=os.fspath(data_dir), download=False)
    examples = list(dataset.as_numpy_iterator())
    assert len(examples) == VAL
    synsets = imagenet_tfds.synset_labels()
    val_synsets = imagenet_tfds.validation_synsets()
    for example in examples:
        name = example["file_name"].decode()
        index = int(re.fullmatch(r"ILSVRC2012_val_(\d{8})\.JPEG",
                                 name).group(1))
        assert example["label"] == synsets.index(val_synsets[index - 1])
    shapes = {example["image"].shape for example in examples}
    assert len(shapes) > 1


def test_prepared_dataset_is_reused_without_archives(built, tmp_path):
    data_dir, builder = built
    again = imagenet_tfds.build_imagenet2012(data_dir, tmp_path)
    assert again.info.splits["validation"].num_examples == VAL
    assert again.data_dir == builder.data_dir


def test_missing_archives_are_named(tmp_path):
    (tmp_path / imagenet_tfds.VAL_TAR).write_bytes(b"")
    with pytest.raises(FileNotFoundError) as error:
        imagenet_tfds.build_imagenet2012(tmp_path / "tfds", tmp_path)
    message = str(error.value)
    assert os.fspath(tmp_path / imagenet_tfds.TRAIN_TAR) in message
    assert os.fspath(tmp_path / imagenet_tfds.VAL_TAR) not in message
    assert "manual_dir" in message


def test_dashes_become_underscores_in_flag_names_only():
    argv = ["prog", "--train-per-class=1", "--val-shards", "2",
            "--out=/a-b", "-x", "--", "a-b"]
    assert command_line.dashes_to_underscores(argv) == [
        "prog", "--train_per_class=1", "--val_shards", "2", "--out=/a-b",
        "-x", "--", "a-b"]


def test_command_line(tmp_path):
    """The tool writes both archives with the sizes of its flags (dashes
    accepted) and says so."""
    command = [sys.executable, os.fspath(TOOL_PATH), "--out",
               os.fspath(tmp_path), "--classes", "2", "--train-per-class",
               "1", "--val", "2", "--corrupt=1", "--seed=5"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    completed = subprocess.run(command, capture_output=True, text=True,
                               env=env, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == [imagenet_tfds.TRAIN_TAR,
                                            imagenet_tfds.VAL_TAR]
    assert "2 images of 2 classes + 1 corrupt" in completed.stdout
    assert [name for name, _ in _tar_members(
        tmp_path / imagenet_tfds.TRAIN_TAR)] == [
            f"{s}.tar" for s in imagenet_tfds.synset_labels()[:2]]
    assert len(_tar_members(tmp_path / imagenet_tfds.VAL_TAR)) == 2
