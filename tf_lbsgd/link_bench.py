"""The all-reduce timed on every worker of an emulated cluster (issue 21).

What each worker of `tools/bench_links.py` runs: the gradient all-reduce
(`allreduce.GradientAllReduce`, RING across processes) of messages of the
given sizes, each split into tensors of `TENSOR_BYTES` as a model's
gradients are (so that packing has something to pack), for each pack size;
the chief writes the medians. `tf_lbsgd.analysis.link_model` sets them
beside the model.
"""

import json
import os
import time

from tf_lbsgd import allreduce
from tf_lbsgd import cluster
from tf_lbsgd import distribute
from tf_lbsgd import scaling_bench

TENSOR_BYTES = 1 << 20  # 1 MiB of float32 per tensor.


def message_shapes(nbytes):
    """float32 tensor shapes adding up to `nbytes` (rounded to 4 bytes),
    TENSOR_BYTES each and one remainder."""
    elements = max(1, nbytes // 4)
    per_tensor = TENSOR_BYTES // 4
    shapes = [(per_tensor,)] * (elements // per_tensor)
    if elements % per_tensor:
        shapes.append((elements % per_tensor,))
    return shapes


def run_worker(sizes, packs, repeats, out_json, rate_mbit=None):
    """Times the all-reduce of each size for each pack size; the chief
    writes {"records": [...]} to `out_json`. Every worker must call it with
    the same arguments; leave with os._exit afterwards."""
    strategy = distribute.build_strategy("multi_worker_mirrored",
                                         collective="ring")
    workers = max(1, cluster.worker_count(cluster.validate_tf_config()))
    records = []
    for pack in packs:
        reduce = allreduce.GradientAllReduce(bytes_per_pack=pack)
        for size in sizes:
            shapes = message_shapes(size)
            seconds, every = scaling_bench.time_allreduce(
                strategy, reduce, shapes, repeats)
            records.append({"rate_mbit": rate_mbit, "workers": workers,
                            "bytes": 4 * sum(s[0] for s in shapes),
                            "bytes_per_pack": pack, "seconds": seconds,
                            "seconds_all": every})
            print(f"bench_links: {records[-1]['bytes']} bytes, pack {pack}: "
                  f"{1e3 * seconds:.1f} ms", flush=True)
    if distribute.is_chief(strategy):
        tmp = out_json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"records": records}, f, indent=2)
        os.replace(tmp, out_json)
    # A barrier, then a moment for a peer still fetching a buffer.
    scaling_bench.time_allreduce(strategy, allreduce.GradientAllReduce(),
                                 [(1,)], repeats=0)
    time.sleep(scaling_bench.EXIT_LINGER_SECONDS)
