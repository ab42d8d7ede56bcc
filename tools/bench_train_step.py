"""Train-step throughput: ours vs tf-models-official's loop vs Keras fit.

Usage:
    python tools/bench_train_step.py --model=resnet50 --out_json=r50.json
    python tools/bench_train_step.py --model=small --out_json=small.json

The models and peers are described in `tf_lbsgd.benchmarks.train_step`.
Each peer is measured --rounds times, round-robin in this one run; a table
of the medians (ms/step, images/s, GFLOP/s, share of the fp32 matmul peak
measured in the same run, speed-up of the reference peer) is printed, and
--out_json gets every measurement and the machine.
"""

import os

from absl import app
from absl import flags

from tf_lbsgd import benchmark
from tf_lbsgd.benchmarks import train_step

_MODEL = flags.DEFINE_enum("model", "resnet50", list(train_step.MODELS),
                          "Which benchmark.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds per peer.")
_BATCH = flags.DEFINE_integer("batch", None,
                              "Global batch (default per model).")
_STEPS = flags.DEFINE_integer("steps", None,
                              "Steps per timing (default per model).")
_PEERS = flags.DEFINE_list("peers", None, "Subset of peers to run.")
_REPLICAS = flags.DEFINE_integer("replicas", None,
                                 "Replicas (default per model).")
_OUT_JSON = flags.DEFINE_string("out_json", None,
                                "Write all measurements here.")


def main(argv):
    """Measures the peers; prints the table; writes the JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    table, payload = train_step.run_benchmark(
        _MODEL.value, _ROUNDS.value, _BATCH.value, _STEPS.value,
        _PEERS.value, _REPLICAS.value)
    print(table)
    benchmark.write_json(_OUT_JSON.value, payload)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    app.run(main)
