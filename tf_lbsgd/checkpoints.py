"""Checkpoints of a multi-worker job: one consistent copy in model_dir.

Under `MultiWorkerMirroredStrategy` every worker must take part in a save
(reading the replicas' synchronised variables is itself a collective), but
only the chief's files may land in model_dir, or the workers would overwrite
one another's. Non-chief workers therefore write to a temporary directory of
their own and delete it after each save, and every worker restores from the
chief's latest checkpoint in model_dir (a shared file system: NFS, GCS, ...).
"""

import os

import tensorflow as tf


def temporary_dir(model_dir, task_id):
    """Where non-chief worker `task_id` writes and then deletes its saves."""
    return os.path.join(model_dir, f".worker_{task_id}_tmp")


class _NonChiefCheckpointManager(tf.train.CheckpointManager):
    """Saves to a throwaway directory; restores from the chief's."""

    def __init__(self, checkpoint, model_dir, task_id, **kwargs):
        super().__init__(checkpoint, temporary_dir(model_dir, task_id),
                         **kwargs)
        self._shared_dir = model_dir

    def restore_or_initialize(self):
        """Restores the chief's latest checkpoint, and, like the chief's
        manager, counts the next save interval from its step (a save is a
        collective: every worker must decide to save at the same steps)."""
        path = tf.train.latest_checkpoint(self._shared_dir)
        if path:
            self._checkpoint.restore(path)
            if self._checkpoint_interval is not None:
                self._last_checkpoint_step = int(self._step_counter.numpy())
        return path

    def save(self, *args, **kwargs):
        path = super().save(*args, **kwargs)
        if path is not None and tf.io.gfile.exists(self.directory):
            tf.io.gfile.rmtree(self.directory)
        return path


def checkpoint_manager(checkpoint, model_dir, step_counter, every_steps,
                       chief=True, task_id=0, max_to_keep=3):
    """A `tf.train.CheckpointManager` for this worker's role.

    Args:
        checkpoint: the `tf.train.Checkpoint` to save and restore.
        model_dir: the run's directory (the chief's checkpoints).
        step_counter: the global step variable (names the checkpoints).
        every_steps: checkpoint interval in steps.
        chief: whether this worker writes into model_dir.
        task_id: this worker's index (names a non-chief's temporary dir).
        max_to_keep: checkpoints kept in model_dir.
    """
    kwargs = dict(max_to_keep=max_to_keep, step_counter=step_counter,
                  checkpoint_interval=every_steps)
    if chief:
        return tf.train.CheckpointManager(checkpoint, model_dir, **kwargs)
    return _NonChiefCheckpointManager(checkpoint, model_dir, task_id, **kwargs)
