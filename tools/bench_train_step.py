"""Train-step throughput: ours vs tf-models-official's loop vs Keras fit.

Usage:
    python tools/bench_train_step.py --model=resnet50 --out_json=r50.json
    python tools/bench_train_step.py --model=small --out_json=small.json
    python tools/bench_train_step.py --model=resnet50 \
        --precision=float32,mixed_bfloat16 --peers=ours,keras_fit,model_garden
    python tools/bench_train_step.py --model=small --cpu_threads=auto \
        --pack_workers=auto --peers=ours,keras_fit \
        --default_threads_peers=keras_fit

The models, peers and how each peer applies a precision are described in
`tf_lbsgd.benchmarks.step_peers`, the timing and tables in
`tf_lbsgd.benchmarks.train_step`. Each peer is measured --rounds times in
each --precision, round-robin in this one run, with the peaks of this CPU
(a matmul and a 3x3 convolution in float32 and bfloat16,
`tf_lbsgd.benchmarks.peaks`). Printed: the CPU's bfloat16 units (AMX,
AVX512_BF16 or emulated), the peaks, a table per precision of the medians
(ms/step, images/s, GFLOP/s, share of that precision's matmul and conv
peaks, speed-up of the reference peer) and, for several precisions, each
peer's speed ratio to the first. --out_json gets every measurement and the
machine. The last example measures ours as the project runs it on this CPU
(its thread and packing choices) beside `model.fit` both under the same
threads and, in a process of its own, with TensorFlow's default threads as
its users run it (`keras_fit_default_threads`), in the same rounds.
"""

import os
import sys

from absl import app
from absl import flags

from tf_lbsgd import benchmark
from tf_lbsgd import cpu_threads
from tf_lbsgd import worker_packing
from tf_lbsgd.benchmarks import peaks
from tf_lbsgd.benchmarks import step_peers
from tf_lbsgd.benchmarks import train_step

_MODEL = flags.DEFINE_enum("model", "resnet50", list(step_peers.MODELS),
                          "Which benchmark.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds per peer.")
_BATCH = flags.DEFINE_integer("batch", None,
                              "Global batch (default per model).")
_STEPS = flags.DEFINE_integer("steps", None,
                              "Steps per timing (default per model).")
_PEERS = flags.DEFINE_list("peers", None, "Subset of peers to run.")
_REPLICAS = flags.DEFINE_integer("replicas", None,
                                 "Replicas (default per model).")
_PRECISION = flags.DEFINE_list(
    "precision", ["float32"],
    "Precisions to measure side by side, of float32, mixed_bfloat16, "
    "mixed_float16; the first is the base of the speed ratios.")
_PEAK_MATMUL_SIZE = flags.DEFINE_integer(
    "peak_matmul_size", peaks.MATMUL_SIZE, "Side of the peak matmul.")
_PEAK_CONV_BATCH = flags.DEFINE_integer(
    "peak_conv_batch", peaks.CONV_SHAPE["batch"],
    "Batch of the peak 3x3 convolution (56x56x64 -> 64).")
_CPU_THREADS = flags.DEFINE_string(
    "cpu_threads", "default",
    "TensorFlow's threads for the peers of this process: 'default', 'auto' "
    "(what the project's runs choose for --replicas on this CPU) or "
    "'inter_op,intra_op'.")
_PACK_WORKERS = flags.DEFINE_string(
    "pack_workers", "false",
    "Run our peers' --replicas simulated workers on fewer replicas (one "
    "per core) with ghost BN per worker: 'auto' (what the project's runs "
    "choose on this CPU), 'true' or 'false'. Keras' fit keeps one replica "
    "per worker.")
_DEFAULT_THREADS_PEERS = flags.DEFINE_list(
    "default_threads_peers", [],
    "Peers also measured each in a process of its own with TensorFlow's "
    "default threads, as their users run them (e.g. keras_fit beside "
    "--cpu_threads=auto), in the same rounds.")
_SERVE_PEER = flags.DEFINE_string(
    "serve_peer", None,
    "Internal: be the process of one peer of --default_threads_peers (its "
    "first --precision), timed on request over stdin and stdout.")
_OUT_JSON = flags.DEFINE_string("out_json", None,
                                "Write all measurements here.")


def _child_command(peer, precision):
    """The argv of this tool serving `peer` in `precision` with
    TensorFlow's default threads (`child_peer`)."""
    passed = [f"--{name}={flag.value}" for name, flag in (
        ("model", _MODEL), ("batch", _BATCH), ("steps", _STEPS),
        ("replicas", _REPLICAS)) if flag.value is not None]
    return [sys.executable, os.path.abspath(__file__), *passed,
            f"--serve_peer={peer}", f"--precision={precision}",
            "--cpu_threads=default"]


def main(argv):
    """Measures the peers; prints the table; writes the JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        step_peers.check_precisions(_PRECISION.value)
    except ValueError as error:
        raise app.UsageError(f"--precision: {error}") from error
    try:
        threads = cpu_threads.parse_flag(_CPU_THREADS.value)
        pack = worker_packing.parse_flag(_PACK_WORKERS.value)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    if _SERVE_PEER.value:  # A peer of another run's --default_threads_peers.
        step_peers.serve_peer(
            _MODEL.value, _SERVE_PEER.value, _PRECISION.value[0],
            _BATCH.value, _STEPS.value, _REPLICAS.value, threads, sys.stdin,
            lambda line: print(line, flush=True))
        benchmark.exit_without_teardown()
    table, payload = train_step.run_benchmark(
        _MODEL.value, _ROUNDS.value, _BATCH.value, _STEPS.value,
        _PEERS.value, _REPLICAS.value, _PRECISION.value,
        _PEAK_MATMUL_SIZE.value, _PEAK_CONV_BATCH.value,
        cpu_threads=threads, pack_workers=pack,
        default_threads_peers=_DEFAULT_THREADS_PEERS.value,
        child_command=_child_command)
    print(table)
    benchmark.write_json(_OUT_JSON.value, payload)
    benchmark.exit_without_teardown()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    app.run(main)
