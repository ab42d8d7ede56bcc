"""Benchmarks the ImageNet training input pipeline: ours vs the Model Garden's.

Usage:
    python tools/bench_input_pipeline.py [--images=256] [--rounds=5] \\
        [--min_side=300] [--max_side=500] [--data_dir=DIR] \\
        [--out_json=bench_input_pipeline.json]

What is compared and how: `tf_lbsgd.benchmarks.input_pipeline`. With
`--data_dir` an existing directory of `train-*-of-*` shards is reused (its
first `--images` records); an empty or missing `--data_dir` is written;
without it the fake images are written to a temporary directory, removed at
the end. The tool sets TensorFlow's intra-op and inter-op parallelism to 1
before any op, then prints a table of the medians of images per wall-clock
second and per CPU second, ours / Model Garden ("MG") ratios of the medians
and medians of the rounds' own ratios ("rounds"), with one thread ("per
core") and with all cores ("per machine"). `--out_json` also gets every
round and the machine. No timing is asserted anywhere.
"""

from absl import app
from absl import flags

from tf_lbsgd import benchmark
from tf_lbsgd.benchmarks import input_pipeline

_IMAGES = flags.DEFINE_integer(
    "images", 256, "Images per round (records read into memory).")
_ROUNDS = flags.DEFINE_integer(
    "rounds", 5, "Interleaved rounds per configuration.")
_MIN_SIDE = flags.DEFINE_integer("min_side", input_pipeline.MIN_SIDE,
                                 "Smallest generated image side, px.")
_MAX_SIDE = flags.DEFINE_integer("max_side", input_pipeline.MAX_SIDE,
                                 "Largest generated image side, px.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Directory of train-*-of-* TFRecords to reuse, or to "
    "write if it has none; default: a temporary directory.")
_OUT_JSON = flags.DEFINE_string("out_json", None,
                                "Also write the results here.")


def main(argv):
    """One thread per op; measures; prints the table; writes the JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    input_pipeline.set_single_threaded()
    records, info = input_pipeline.load_records(
        _IMAGES.value, _DATA_DIR.value, _MIN_SIDE.value, _MAX_SIDE.value)
    print(input_pipeline.describe(info, _ROUNDS.value))
    results = input_pipeline.measure(records, _ROUNDS.value)
    print(input_pipeline.table(results))
    if _OUT_JSON.value:
        benchmark.write_json(_OUT_JSON.value, input_pipeline.payload(
            info, _ROUNDS.value, results))
        print(f"wrote {_OUT_JSON.value}")


if __name__ == "__main__":
    app.run(main)
