"""Checkpoints of a run: resuming safely, and one consistent copy in model_dir.

Resuming. `restore_or_initialize` of the managers made here restores the
newest *intact* checkpoint listed in model_dir's `checkpoint` state file, not
blindly the latest: every tensor of a candidate is read first, which detects
a truncated or missing .index or .data file and bit rot (TF's tensor bundles
keep a crc32c per tensor). A damaged checkpoint is skipped with a warning
(absl logging and a line on stderr) naming it and the reason. It is never
deleted: the chief renames its files aside, e.g. `ckpt-30.index` to
`ckpt-30.corrupt-20250102T030405.index` (still a checkpoint prefix that
`tf.train.load_checkpoint` opens, to inspect it), and drops it from the state
file, so that `max_to_keep` never deletes it later and a new `ckpt-30` does
not mix with its files. Checkpoints on disk but not in the state file are not
considered. A checkpoint written by a different model (other variables,
shapes or dtypes) is refused with a `ValueError` instead of restoring part of
it.

Multi-worker. Under `MultiWorkerMirroredStrategy` every worker must take part
in a save (reading the replicas' synchronised variables is itself a
collective), but only the chief's files may land in model_dir, or the workers
would overwrite one another's. Non-chief workers therefore write to a
temporary directory of their own and delete it after each save, and every
worker restores from the chief's model_dir (a shared file system: NFS, GCS,
...). Each worker checks the chief's checkpoints itself and they reach the
same choice: a checkpoint the chief renames aside while a worker checks it is
damaged for both (its content, or its files, are unreadable). Only a
transient read error on one worker could split them.
"""

import collections
import os
import re
import sys
import time

from absl import logging
import tensorflow as tf

from tf_lbsgd import outputs

# The name of TF's checkpoint state file in a checkpoint directory.
STATE_FILE = "checkpoint"

# Errors of reading a damaged checkpoint: TF raises OpError (DataLossError
# for a checksum mismatch, NotFoundError for a missing file) or, for a
# truncated .data file, IndexError ("Read less bytes than requested").
_READ_ERRORS = (tf.errors.OpError, IndexError, ValueError, OSError)

# What TF raises when a checkpoint's variables do not fit the objects they
# are restored into: ValueError (shapes), InvalidArgumentError (dtypes),
# AssertionError (from the status' assert_* methods: variables missing on
# either side).
_MISMATCH_ERRORS = (ValueError, tf.errors.InvalidArgumentError,
                    AssertionError)

SkippedCheckpoint = collections.namedtuple("SkippedCheckpoint",
                                           ["path", "reason"])
SkippedCheckpoint.__doc__ = """A checkpoint passed over: its prefix and why."""


def warn(message):
    """Tells the user: an absl warning and a line on stderr."""
    logging.warning(message)
    print(f"tf-lbsgd: warning: {message}", file=sys.stderr, flush=True)


def temporary_dir(model_dir, task_id):
    """Where non-chief worker `task_id` writes and then deletes its saves."""
    return os.path.join(model_dir, f".worker_{task_id}_tmp")


def _first_line(error):
    """The first line of an error, without TF's `{{function_node ...}}`."""
    text = re.sub(r"^\{\{[^}]*\}\}\s*", "", str(error).strip())
    return text.splitlines()[0] if text else ""


def _error_text(error):
    """`Type: first line` of an error."""
    return f"{type(error).__name__}: {_first_line(error)}"


def checkpoint_problem(path):
    """Why the checkpoint with prefix `path` cannot be restored, or None.

    Reads every tensor (one at a time), so a truncated or missing file and a
    tensor whose crc32c does not match (bit rot) are all found.

    Args:
        path: a checkpoint prefix, e.g. `model_dir/ckpt-30`.

    Returns:
        None if every tensor reads back; otherwise a sentence naming the
        unreadable file or tensor and TF's error.
    """
    if not tf.io.gfile.exists(path + ".index"):
        return f"its index file {path}.index is missing"
    try:
        reader = tf.train.load_checkpoint(path)
        names = sorted(reader.get_variable_to_shape_map())
    except _READ_ERRORS as error:
        return (f"its index file {path}.index cannot be read "
                f"({_error_text(error)})")
    for name in names:
        try:
            reader.get_tensor(name)
        except _READ_ERRORS as error:
            return (f"tensor {name!r} cannot be read from its data file(s) "
                    f"{path}.data-* ({_error_text(error)})")
    return None


def _listed_checkpoints(directory):
    """The prefixes the state file of `directory` lists, newest first."""
    state = tf.train.get_checkpoint_state(directory)
    if state is None:
        return []
    newest_first = [state.model_checkpoint_path]
    newest_first += reversed(state.all_model_checkpoint_paths)
    return list(dict.fromkeys(newest_first))


def newest_intact_checkpoint(directory, log=warn):
    """The newest checkpoint of `directory` that reads back whole.

    Candidates are the checkpoints listed in the directory's `checkpoint`
    state file, newest first; each is checked with `checkpoint_problem` until
    one passes. Nothing is changed on disk.

    Args:
        directory: a checkpoint directory (model_dir).
        log: called with a message for each skipped checkpoint (default
            `warn`).

    Returns:
        `(path, skipped)`: the prefix of the newest intact checkpoint (None
        if there is none), and a list of `SkippedCheckpoint`, newest first,
        of the newer ones that are damaged.
    """
    skipped = []
    for path in _listed_checkpoints(directory):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append(SkippedCheckpoint(path, problem))
        log(f"skipping the damaged checkpoint {path}: {problem}")
    return None, skipped


def set_aside(path, stamp=None):
    """Renames the files of checkpoint `path` to `<path>.corrupt-<stamp>.*`.

    The renamed files still form a checkpoint (prefix
    `<path>.corrupt-<stamp>`) for `tf.train.load_checkpoint` to inspect; no
    manager lists or deletes them.

    Args:
        path: a checkpoint prefix, e.g. `model_dir/ckpt-30`.
        stamp: the suffix's time, default now (local, `20250102T030405`).

    Returns:
        The new prefix, or None if `path` had no files left to rename.
    """
    stamp = stamp or time.strftime("%Y%m%dT%H%M%S")
    aside = f"{path}.corrupt-{stamp}"
    files = tf.io.gfile.glob(path + ".index") + tf.io.gfile.glob(
        path + ".data-*")
    for name in files:
        tf.io.gfile.rename(name, aside + name[len(path):], overwrite=False)
    return aside if files else None


def _different_model_detail(error):
    """What TF's restore error says about the mismatch, in one line."""
    text = str(error)
    unbound = sorted(set(re.findall(
        r"<Variable path=([^,]+), shape=(\([^)]*\))", text)))
    if unbound:  # assert_existing_objects_matched, in no set order.
        count = re.search(r"Found (\d+) Python objects", text)
        examples = ", ".join(f"{name} of shape {shape}"
                             for name, shape in unbound[:3])
        return (f"{count.group(1) if count else len(unbound)} variable(s) of "
                f"this run have no value in it, e.g. {examples}")
    key = re.search(r'checkpoint_key: "([^"]+)"', text)
    if key:  # assert_consumed
        return (f"it has values that no variable of this run takes, e.g. "
                f"{key.group(1)}")
    return _first_line(error).rstrip(".")


def restore_same_model(checkpoint, path, directory):
    """Restores `path` into `checkpoint`, refusing a different model's.

    Every variable must exist already (build the model and the optimizer
    first): a mismatch is then found here and not at first use.

    Args:
        checkpoint: the run's `tf.train.Checkpoint`.
        path: the checkpoint prefix to restore.
        directory: the run's model_dir (for the message).

    Raises:
        ValueError: if the checkpoint's variables do not match this run's
            (names, shapes or dtypes), naming a mismatching variable and,
            when TF gives them, the shapes.
    """
    status = None
    try:
        status = checkpoint.restore(path)
        status.assert_existing_objects_matched()
        status.assert_consumed()
    except _MISMATCH_ERRORS as error:
        if status is not None:
            status.expect_partial()  # No second report, at exit, from TF.
        raise ValueError(
            f"the checkpoint {path} in {directory} was written by a different "
            f"model (or optimizer, or precision) than this run builds: "
            f"{_different_model_detail(error)}. Resume with the settings "
            f"that wrote it (see {outputs.OPERATIVE_CONFIG} in {directory}), "
            f"or use another model_dir") from error


class _ResumingManager(tf.train.CheckpointManager):
    """Restores the newest intact checkpoint of `restore_dir`, once chosen.

    `restore_or_initialize` may be called more than once (train_lib, then
    orbit's Controller): the choice, with its warnings, is made on the first
    call; every call restores it.
    """

    def __init__(self, checkpoint, directory, restore_dir, log, **kwargs):
        super().__init__(checkpoint, directory, **kwargs)
        self._restore_dir = restore_dir
        self._log = log
        self._choice = None
        self._chosen = False

    def _choose(self):
        path, skipped = newest_intact_checkpoint(self._restore_dir, self._log)
        self._handle_skipped(skipped, path)
        if skipped and path:
            self._log(f"resuming from {path}, the newest intact checkpoint "
                      f"in {self._restore_dir}")
        elif skipped:
            self._log(f"no intact checkpoint in {self._restore_dir}: "
                      f"starting from scratch")
        return path

    def _handle_skipped(self, skipped, path):
        """What the manager does with the `skipped` checkpoints, after
        choosing `path`: nothing (the chief's manager overrides it)."""

    def restore_or_initialize(self):
        """Restores the newest intact checkpoint and, like TF's manager,
        counts the next save interval from its step (a save is a collective:
        every worker must decide to save at the same steps).

        Returns:
            The restored checkpoint's prefix, or None if there was none.

        Raises:
            ValueError: if that checkpoint was written by a different model
                (see `restore_same_model`).
        """
        if not self._chosen:
            self._choice = self._choose()
            self._chosen = True
        if self._choice is None:
            return None
        restore_same_model(self._checkpoint, self._choice, self._restore_dir)
        if self._checkpoint_interval is not None:
            self._last_checkpoint_step = int(self._step_counter.numpy())
        return self._choice


class _ChiefCheckpointManager(_ResumingManager):
    """Saves to and restores from model_dir; sets damaged checkpoints aside."""

    def __init__(self, checkpoint, model_dir, log, **kwargs):
        super().__init__(checkpoint, model_dir, model_dir, log, **kwargs)

    def _handle_skipped(self, skipped, path):
        """Renames the files of the `skipped` checkpoints aside and rewrites
        the state file without them (`path` becomes the latest)."""
        if not skipped:
            return
        for bad in skipped:
            aside = set_aside(bad.path)
            if aside:
                self._log(f"renamed the files of {bad.path} to {aside}.* "
                          f"(kept to inspect; delete them when done)")
            self._maybe_delete.pop(bad.path, None)
        self._latest_checkpoint = path
        if path is None:  # Nothing left to list; the next save rewrites it.
            tf.io.gfile.remove(os.path.join(self.directory, STATE_FILE))
        elif self._maybe_delete:
            self._record_state()


class _NonChiefCheckpointManager(_ResumingManager):
    """Saves to a throwaway directory; restores from the chief's."""

    def __init__(self, checkpoint, model_dir, task_id, log, **kwargs):
        super().__init__(checkpoint, temporary_dir(model_dir, task_id),
                         model_dir, log, **kwargs)

    def save(self, *args, **kwargs):
        path = super().save(*args, **kwargs)
        if path is not None and tf.io.gfile.exists(self.directory):
            tf.io.gfile.rmtree(self.directory)
        return path


def checkpoint_manager(checkpoint, model_dir, step_counter, every_steps,
                       chief=True, task_id=0, max_to_keep=3, log=warn):
    """A `tf.train.CheckpointManager` for this worker's role.

    Its `restore_or_initialize` restores the newest intact checkpoint of
    model_dir (see the module docstring) and returns its prefix, or None.

    Args:
        checkpoint: the `tf.train.Checkpoint` to save and restore.
        model_dir: the run's directory (the chief's checkpoints).
        step_counter: the global step variable (names the checkpoints).
        every_steps: checkpoint interval in steps.
        chief: whether this worker writes into model_dir.
        task_id: this worker's index (names a non-chief's temporary dir).
        max_to_keep: checkpoints kept in model_dir.
        log: called with each warning about a damaged checkpoint.
    """
    kwargs = dict(max_to_keep=max_to_keep, step_counter=step_counter,
                  checkpoint_interval=every_steps)
    if chief:
        return _ChiefCheckpointManager(checkpoint, model_dir, log, **kwargs)
    return _NonChiefCheckpointManager(checkpoint, model_dir, task_id, log,
                                      **kwargs)
