"""A worker of tests/test_multi_worker.py: records the example indices it reads.

Run by tools/launch_local.py with TF_CONFIG set; builds the real
MultiWorkerMirroredStrategy (RING) and the R12 index stream through
`distribute_datasets_from_function`, reads `steps` global steps and writes
`{out_dir}/worker_{index}.json` = the list of this worker's index vectors.

    python tests/multi_worker_data_probe.py OUT_DIR NUM_EXAMPLES N STEPS SEED
"""

import json
import os
import sys

import tensorflow as tf

from tf_lbsgd import distribute
from tf_lbsgd.data import sharding


def main(out_dir, num_examples, per_replica, steps, seed):
    strategy = distribute.build_strategy("multi_worker_mirrored",
                                         collective="ring")
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: sharding.train_index_dataset(num_examples, per_replica,
                                                 ctx, seed))
    iterator = iter(dataset)
    seen = []
    for _ in range(steps):
        for local in strategy.experimental_local_results(next(iterator)):
            seen.append(local.numpy().tolist())
    task = strategy.cluster_resolver.task_id
    with open(os.path.join(out_dir, f"worker_{task}.json"), "w") as f:
        json.dump({"replicas": strategy.num_replicas_in_sync,
                   "indices": seen}, f)


if __name__ == "__main__":
    out, *numbers = sys.argv[1:]
    main(out, *map(int, numbers))
