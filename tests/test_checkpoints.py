"""Checkpoint managers of the chief and of the other workers.

Only the chief writes into model_dir; a non-chief worker saves into its own
temporary directory (deleted after each save), restores the chief's latest
checkpoint, and makes the same save decisions as the chief.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import checkpoints


class _State:
    """A variable, a step counter and their checkpoint."""

    def __init__(self):
        self.weights = tf.Variable([1.0, 2.0, 3.0], name="weights")
        self.step = tf.Variable(0, dtype=tf.int64, name="global_step")
        self.checkpoint = tf.train.Checkpoint(weights=self.weights,
                                              global_step=self.step)

    def manager(self, model_dir, chief, every_steps=10, task_id=None):
        if task_id is None:
            task_id = 0 if chief else 1
        return checkpoints.checkpoint_manager(
            self.checkpoint, model_dir, self.step, every_steps, chief=chief,
            task_id=task_id)


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
