"""Checkpoint managers of the chief and of the other workers.

Only the chief writes into model_dir; a non-chief worker saves into its own
temporary directory (deleted after each save), restores the chief's latest
checkpoint, and makes the same save decisions as the chief.

Resuming skips damaged checkpoints (truncated, missing or bit-rotted files,
made here by damaging real checkpoints) without deleting them, and refuses
a checkpoint of a different model (real Keras models).
"""

import glob
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import checkpoints
from tf_lbsgd import optimizers
from tf_lbsgd.models.resnet_cifar import resnet_cifar


class _State:
    """A variable, a step counter and their checkpoint."""

    def __init__(self, size=3):
        self.weights = tf.Variable(np.arange(1.0, size + 1, dtype=np.float32),
                                   name="weights")
        self.step = tf.Variable(0, dtype=tf.int64, name="global_step")
        self.checkpoint = tf.train.Checkpoint(weights=self.weights,
                                              global_step=self.step)

    def manager(self, model_dir, chief, every_steps=10, task_id=None,
                log=None):
        if task_id is None:
            task_id = 0 if chief else 1
        kwargs = {} if log is None else {"log": log}
        return checkpoints.checkpoint_manager(
            self.checkpoint, model_dir, self.step, every_steps, chief=chief,
            task_id=task_id, **kwargs)


def _save(manager, state, check_interval=False):
    """Saves as orbit's Controller does: numbered by the global step."""
    return manager.save(checkpoint_number=int(state.step.numpy()),
                        check_interval=check_interval)


def _listing(directory):
    """Every file and directory under `directory`, relative to it."""
    found = set()
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(root, name), directory))
    return found


@pytest.fixture
def model_dir(tmp_path):
    path = str(tmp_path / "model")
    os.makedirs(path)
    return path


def test_temporary_dir_is_per_task_inside_model_dir(model_dir):
    one = checkpoints.temporary_dir(model_dir, 1)
    two = checkpoints.temporary_dir(model_dir, 2)
    assert one != two
    assert os.path.dirname(one) == model_dir


def test_nothing_to_restore_returns_none(model_dir):
    state = _State()
    assert state.manager(model_dir, chief=True).restore_or_initialize() is None
    assert state.manager(model_dir, chief=False).restore_or_initialize() is None
    np.testing.assert_array_equal(state.weights.numpy(), [1.0, 2.0, 3.0])
    assert int(state.step.numpy()) == 0
    assert _listing(model_dir) == set()


def test_chief_saves_into_model_dir(model_dir):
    state = _State()
    chief = state.manager(model_dir, chief=True)
    state.step.assign(20)
    path = _save(chief, state)
    assert path == os.path.join(model_dir, "ckpt-20")
    assert tf.train.latest_checkpoint(model_dir) == path
    assert os.path.exists(path + ".index")


def test_non_chief_restores_the_chiefs_latest_checkpoint(model_dir):
    state = _State()
    chief = state.manager(model_dir, chief=True)
    state.step.assign(10)
    _save(chief, state)
    state.weights.assign([4.0, 5.0, 6.0])
    state.step.assign(20)
    chief_path = _save(chief, state)
    # The worker's values have drifted since (or it is a fresh process).
    state.weights.assign([-7.0, 0.0, 7.0])
    state.step.assign(99)
    worker = state.manager(model_dir, chief=False)
    assert worker.restore_or_initialize() == chief_path
    assert chief_path.endswith("ckpt-20")
    np.testing.assert_array_equal(state.weights.numpy(), [4.0, 5.0, 6.0])
    assert int(state.step.numpy()) == 20


def test_non_chief_save_leaves_model_dir_untouched(model_dir):
    state = _State()
    chief = state.manager(model_dir, chief=True)
    state.step.assign(20)
    chief_path = _save(chief, state)
    before = _listing(model_dir)
    with open(os.path.join(model_dir, "checkpoint")) as f:
        state_file = f.read()

    worker = state.manager(model_dir, chief=False, task_id=3)
    assert worker.restore_or_initialize() == chief_path
    temporary = checkpoints.temporary_dir(model_dir, 3)
    # More saves than max_to_keep (3): deleting old, already removed saves
    # must not fail either.
    for step in (30, 40, 50, 60, 70):
        state.step.assign(step)
        path = _save(worker, state)
        assert path is not None
        assert path.startswith(temporary + os.sep)
        assert path.endswith(f"ckpt-{step}")
        assert not os.path.exists(temporary)
        assert _listing(model_dir) == before
    with open(os.path.join(model_dir, "checkpoint")) as f:
        assert f.read() == state_file
    assert tf.train.latest_checkpoint(model_dir) == chief_path


@pytest.mark.parametrize("chief", [True, False], ids=["chief", "non_chief"])
def test_save_interval_counts_from_the_restored_step(model_dir, chief):
    state = _State()
    state.step.assign(20)
    _save(state.manager(model_dir, chief=True), state)
    state.step.assign(0)

    manager = state.manager(model_dir, chief=chief, every_steps=10)
    assert manager.restore_or_initialize().endswith("ckpt-20")
    assert int(state.step.numpy()) == 20
    state.step.assign(25)
    assert _save(manager, state, check_interval=True) is None
    state.step.assign(29)
    assert _save(manager, state, check_interval=True) is None
    state.step.assign(30)
    path = _save(manager, state, check_interval=True)
    assert path is not None and path.endswith("ckpt-30")
    state.step.assign(35)
    assert _save(manager, state, check_interval=True) is None
    state.step.assign(40)
    assert _save(manager, state, check_interval=True).endswith("ckpt-40")
    if chief:
        assert tf.train.latest_checkpoint(model_dir) == path.replace(
            "ckpt-30", "ckpt-40")
    else:
        assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-20")
        assert not os.path.exists(checkpoints.temporary_dir(model_dir, 1))


@pytest.mark.parametrize("resume", [True, False],
                         ids=["resumed_at_20", "fresh_start"])
def test_chief_and_non_chief_make_the_same_save_decisions(model_dir, resume):
    """Two workers starting together (from the chief's checkpoint of step
    20, or from nothing), stepping together: a save is a collective, so they
    must save at the same steps."""
    chief_state, worker_state = _State(), _State()
    if resume:
        chief_state.step.assign(20)
        _save(chief_state.manager(model_dir, chief=True), chief_state)
        chief_state.step.assign(0)

    chief = chief_state.manager(model_dir, chief=True, every_steps=10)
    worker = worker_state.manager(model_dir, chief=False, every_steps=10)
    assert chief.restore_or_initialize() == worker.restore_or_initialize()
    start = int(chief_state.step.numpy())
    assert int(worker_state.step.numpy()) == start == (20 if resume else 0)
    decisions = {"chief": [], "worker": []}
    for step in range(start + 1, 46):
        for name, state, manager in (("chief", chief_state, chief),
                                     ("worker", worker_state, worker)):
            state.step.assign(step)
            if _save(manager, state, check_interval=True) is not None:
                decisions[name].append(step)
    # Without an earlier save, the first check saves (step 1) and the
    # interval counts from there.
    assert decisions["chief"] == ([30, 40] if resume else [1, 11, 21, 31, 41])
    assert decisions["worker"] == decisions["chief"]


# ---------------------------------------------------------------------------
# Damaged checkpoints: skipped on resume, never deleted.

_DATA = ".data-00000-of-00001"
_SIZE = 1000  # 4000 bytes of weights: the middle of the .data file.


def _truncate(filename):
    with open(filename, "rb") as f:
        content = f.read()
    with open(filename, "wb") as f:
        f.write(content[:len(content) // 2])


def _flip_middle_bytes(filename, count=4):
    with open(filename, "rb") as f:
        content = bytearray(f.read())
    middle = len(content) // 2
    for i in range(middle, middle + count):
        content[i] ^= 0xFF
    with open(filename, "wb") as f:
        f.write(bytes(content))


# Damage: (file suffix, what is done to it, what the reason says).
_DAMAGES = {
    "truncated_data": (_DATA, _truncate, "Read less bytes than requested"),
    "truncated_index": (".index", _truncate, "bad magic number"),
    "bit_rot_in_data": (_DATA, _flip_middle_bytes, "Checksum does not match"),
    "missing_data": (_DATA, os.remove, "No such file"),
    "missing_index": (".index", os.remove, "is missing"),
}


def _damage(path, kind):
    suffix, damage, _ = _DAMAGES[kind]
    damage(path + suffix)


def _save_steps(model_dir, steps=(10, 20, 30)):
    """Saves ckpt-<step> with every weight equal to the step; returns
    {step: path}."""
    state = _State(size=_SIZE)
    manager = state.manager(model_dir, chief=True)
    paths = {}
    for step in steps:
        state.step.assign(step)
        state.weights.assign(np.full(_SIZE, float(step), np.float32))
        paths[step] = _save(manager, state)
    return paths


def _contents(pattern):
    """{file name: bytes} of the files matching `pattern`."""
    found = {}
    for name in sorted(glob.glob(pattern)):
        with open(name, "rb") as f:
            found[os.path.basename(name)] = f.read()
    return found


def _listed(model_dir):
    """The checkpoint names the state file lists, oldest first."""
    state = tf.train.get_checkpoint_state(model_dir)
    return [os.path.basename(p) for p in state.all_model_checkpoint_paths]


def test_intact_checkpoint_has_no_problem(model_dir):
    paths = _save_steps(model_dir, steps=(10,))
    assert checkpoints.checkpoint_problem(paths[10]) is None


@pytest.mark.parametrize("kind", sorted(_DAMAGES))
def test_problem_names_the_damaged_file_and_tf_error(model_dir, kind):
    path = _save_steps(model_dir, steps=(10,))[10]
    _damage(path, kind)
    problem = checkpoints.checkpoint_problem(path)
    assert problem is not None
    assert _DAMAGES[kind][2] in problem
    suffix = ".index" if _DAMAGES[kind][0] == ".index" else ".data-*"
    assert path + suffix in problem


def test_bit_rot_is_found_by_reading_the_tensor_not_by_opening(model_dir):
    """What detects it: the index opens, the damaged tensor's crc32c does
    not match when it is read; a plain restore fails the same way."""
    path = _save_steps(model_dir, steps=(10,))[10]
    _flip_middle_bytes(path + _DATA)
    reader = tf.train.load_checkpoint(path)
    assert reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE") == 10
    with pytest.raises(tf.errors.OpError, match="Checksum does not match"):
        reader.get_tensor("weights/.ATTRIBUTES/VARIABLE_VALUE")
    with pytest.raises(tf.errors.DataLossError, match="Checksum"):
        _State(size=_SIZE).checkpoint.restore(path)
    assert "'weights/.ATTRIBUTES/VARIABLE_VALUE'" in (
        checkpoints.checkpoint_problem(path))


@pytest.mark.parametrize("kind", sorted(_DAMAGES))
def test_chief_resumes_from_the_newest_intact_checkpoint(model_dir, kind):
    paths = _save_steps(model_dir)
    _damage(paths[30], kind)
    damaged = _contents(paths[30] + ".*")
    state, messages = _State(size=_SIZE), []

    manager = state.manager(model_dir, chief=True, log=messages.append)
    assert manager.restore_or_initialize() == paths[20]
    np.testing.assert_array_equal(state.weights.numpy(), np.full(_SIZE, 20.0))
    assert int(state.step.numpy()) == 20
    assert manager.latest_checkpoint == paths[20]
    # The user is told which checkpoint was skipped, why, and where it went.
    assert messages[0].startswith(f"skipping the damaged checkpoint "
                                  f"{paths[30]}: ")
    assert _DAMAGES[kind][2] in messages[0]
    assert messages[-1].startswith(f"resuming from {paths[20]}, the newest "
                                   f"intact checkpoint in {model_dir}")
    # Nothing deleted: the files that were left are renamed aside, intact.
    aside = _contents(paths[30] + ".corrupt-*")
    assert not glob.glob(paths[30] + ".index") + glob.glob(paths[30] + _DATA)
    assert sorted(aside.values()) == sorted(damaged.values())
    assert [name.split(".corrupt-")[1].split(".", 1)[1] for name in aside] \
        == [name.split(".", 1)[1] for name in damaged]
    assert len(messages) == 3  # Skipped, renamed, resuming.
    assert messages[1].startswith(f"renamed the files of {paths[30]} to "
                                  f"{paths[30]}.corrupt-")
    # The state file forgets it: max_to_keep will never delete it.
    assert _listed(model_dir) == ["ckpt-10", "ckpt-20"]
    assert tf.train.latest_checkpoint(model_dir) == paths[20]


def test_damaged_checkpoint_survives_later_saves(model_dir):
    """Falling back to ckpt-20 while ckpt-30 is bit-rotted, training saves a
    new ckpt-30 and goes on past max_to_keep (3): the new ckpt-30 is whole,
    and the damaged one stays aside, byte for byte, openable to inspect."""
    paths = _save_steps(model_dir)
    _flip_middle_bytes(paths[30] + _DATA)
    damaged = _contents(paths[30] + ".*")
    state = _State(size=_SIZE)
    manager = state.manager(model_dir, chief=True, log=lambda message: None)
    assert manager.restore_or_initialize() == paths[20]

    state.step.assign(30)
    assert _save(manager, state) == paths[30]
    assert checkpoints.checkpoint_problem(paths[30]) is None
    for step in (40, 50, 60):
        state.step.assign(step)
        _save(manager, state)
    assert _listed(model_dir) == ["ckpt-40", "ckpt-50", "ckpt-60"]
    aside = _contents(paths[30] + ".corrupt-*")
    assert sorted(aside.values()) == sorted(damaged.values())
    prefix = os.path.join(model_dir, min(aside).rsplit(".", 1)[0])
    reader = tf.train.load_checkpoint(prefix)
    assert reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE") == 30


@pytest.mark.parametrize("chief_first", [True, False],
                         ids=["chief_first", "worker_first"])
def test_chief_and_non_chief_skip_to_the_same_checkpoint(model_dir,
                                                         chief_first):
    paths = _save_steps(model_dir)
    _truncate(paths[30] + _DATA)
    chief_state, worker_state = _State(size=_SIZE), _State(size=_SIZE)
    chief = chief_state.manager(model_dir, chief=True, log=lambda m: None)
    worker = worker_state.manager(model_dir, chief=False, log=lambda m: None)
    if chief_first:
        assert chief.restore_or_initialize() == paths[20]
        assert worker.restore_or_initialize() == paths[20]
    else:
        assert worker.restore_or_initialize() == paths[20]
        # A non-chief worker only reads model_dir.
        assert os.path.exists(paths[30] + _DATA)
        assert _listed(model_dir) == ["ckpt-10", "ckpt-20", "ckpt-30"]
        assert chief.restore_or_initialize() == paths[20]
    for state in (chief_state, worker_state):
        assert int(state.step.numpy()) == 20


def test_no_intact_checkpoint_starts_from_scratch(model_dir):
    paths = _save_steps(model_dir)
    for path in paths.values():
        _flip_middle_bytes(path + _DATA)
    state, messages = _State(size=_SIZE), []
    manager = state.manager(model_dir, chief=True, log=messages.append)
    assert manager.restore_or_initialize() is None
    np.testing.assert_array_equal(state.weights.numpy(),
                                  np.arange(1.0, _SIZE + 1))
    assert int(state.step.numpy()) == 0
    assert "no intact checkpoint" in messages[-1]
    assert len(glob.glob(os.path.join(model_dir, "*.corrupt-*.index"))) == 3
    assert tf.train.latest_checkpoint(model_dir) is None
    state.step.assign(5)
    _save(manager, state)
    assert _listed(model_dir) == ["ckpt-5"]


def test_restoring_twice_warns_once(model_dir):
    """train_lib calls restore_or_initialize, then orbit's Controller."""
    paths = _save_steps(model_dir)
    _truncate(paths[30] + ".index")
    state, messages = _State(size=_SIZE), []
    manager = state.manager(model_dir, chief=True, log=messages.append)
    assert manager.restore_or_initialize() == paths[20]
    count = len(messages)
    state.weights.assign(np.zeros(_SIZE, np.float32))
    assert manager.restore_or_initialize() == paths[20]
    assert len(messages) == count
    np.testing.assert_array_equal(state.weights.numpy(), np.full(_SIZE, 20.0))


def test_intact_latest_checkpoint_is_restored_without_a_word(model_dir):
    paths = _save_steps(model_dir)
    before = _listing(model_dir)
    messages = []
    manager = _State(size=_SIZE).manager(model_dir, chief=True,
                                         log=messages.append)
    assert manager.restore_or_initialize() == paths[30]
    assert messages == []
    assert _listing(model_dir) == before


def test_default_log_warns_through_absl_and_on_stderr(model_dir, capsys,
                                                      caplog):
    paths = _save_steps(model_dir)
    _truncate(paths[30] + _DATA)
    capsys.readouterr()
    with caplog.at_level(logging.WARNING):
        manager = _State(size=_SIZE).manager(model_dir, chief=True)
        assert manager.restore_or_initialize() == paths[20]
    stderr = capsys.readouterr().err
    assert (f"tf-lbsgd: warning: skipping the damaged checkpoint {paths[30]}"
            in stderr)
    assert any(record.levelno == logging.WARNING
               and f"skipping the damaged checkpoint {paths[30]}"
               in record.getMessage() for record in caplog.records)


# ---------------------------------------------------------------------------
# A checkpoint of a different model: a ValueError that says so.

def _keras_checkpoint(model):
    """A checkpoint as train_lib builds it: model, built optimizer, step."""
    optimizer = optimizers.MomentumSGD(0.1)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, name="global_step")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                     global_step=step)
    return checkpoint, step


def _save_model(model_dir, model):
    checkpoint, step = _keras_checkpoint(model)
    step.assign(10)
    return checkpoints.checkpoint_manager(checkpoint, model_dir, step,
                                          10).save(checkpoint_number=10)


def _restore_model(model_dir, model):
    checkpoint, step = _keras_checkpoint(model)
    return checkpoints.checkpoint_manager(
        checkpoint, model_dir, step, 10).restore_or_initialize()


def _dense(layers):
    return keras.Sequential([keras.Input((4,))]
                            + [keras.layers.Dense(4) for _ in range(layers)])


def _resnet8(width):
    return resnet_cifar(input_shape=(8, 8, 1), num_classes=10, depth=8,
                        width=width)


def test_same_keras_model_restores(model_dir):
    path = _save_model(model_dir, _resnet8(width=16))
    assert _restore_model(model_dir, _resnet8(width=16)) == path


def test_checkpoint_of_a_wider_resnet_names_a_variable_and_its_shapes(
        model_dir):
    path = _save_model(model_dir, _resnet8(width=32))
    with pytest.raises(ValueError) as raised:
        _restore_model(model_dir, _resnet8(width=16))
    message = str(raised.value)
    assert message.startswith(f"the checkpoint {path} in {model_dir} was "
                              f"written by a different model")
    assert "(64,)" in message and "(32,)" in message
    assert "s2b1_bn1/moving_mean" in message
    assert "operative_config.gin" in message


@pytest.mark.parametrize("layers, detail", [
    # Same shapes, one more layer: restore alone would leave it fresh.
    (3, r"4 variable\(s\) of this run have no value in it, e\.g\. "
        r"\S*dense\S* of shape \((4, 4|4,)\)"),
    # One layer fewer: restore alone would drop the checkpoint's second.
    (1, r"it has values that no variable of this run takes, e\.g\. "
        r"\S+/\.ATTRIBUTES/VARIABLE_VALUE"),
], ids=["model_has_more", "checkpoint_has_more"])
def test_same_shapes_but_other_variables(model_dir, layers, detail):
    _save_model(model_dir, _dense(layers=2))
    with pytest.raises(ValueError,
                       match=r"written by a different model.*: " + detail):
        _restore_model(model_dir, _dense(layers=layers))


def test_variable_of_another_dtype(model_dir):
    path = tf.train.Checkpoint(step=tf.Variable(3, dtype=tf.int64)).save(
        os.path.join(model_dir, "ckpt"))
    with pytest.raises(ValueError, match=r"written by a different model.*"
                       r"expected dtype float does not equal original dtype "
                       r"int64"):
        checkpoints.restore_same_model(
            tf.train.Checkpoint(step=tf.Variable(0.0)), path, model_dir)
