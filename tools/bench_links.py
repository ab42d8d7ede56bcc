"""The ring all-reduce over emulated links of known rate, beside the model.

Usage (as root):
    python tools/bench_links.py [--hosts=2] [--rates_mbit=0,500,1000,2000] \\
        [--sizes=...] [--bytes_per_pack=0,4194304] [--repeats=3] \\
        [--out_json=docs/performance/links.json]

For each rate (0: unshaped, the CPU's own cost) the driver builds an
emulated cluster of --hosts hosts (`tf_lbsgd.netns_cluster`, links shaped
both ways) and runs one worker per host (`tf_lbsgd.link_bench.run_worker`:
the gradient all-reduce of each size, in 1 MiB tensors, for each pack size).
It prints the measured times beside the alpha-beta ring model for the same
link (`tf_lbsgd.analysis.link_model`), which points are link-bound, and
whether the model holds there within 20%; --out_json keeps every number.
The default sizes end with ResNet-50's gradient, 102,228,128 bytes.
Exit code: 0; 1 if a run failed; 2 for a bad request or without root.
"""

import json
import os
import sys
import tempfile
import time
import traceback

from absl import app
from absl import flags

from tf_lbsgd import launch
from tf_lbsgd import netns_cluster
from tf_lbsgd.analysis import link_model
from tf_lbsgd.analysis import machine
from tf_lbsgd.analysis import tables

RESNET50_GRADIENT_BYTES = 102228128

flags.DEFINE_enum("role", "driver", ["driver", "worker"],
                  "`driver` runs the plan; `worker` is what it starts.")
flags.DEFINE_integer("hosts", 2, "Emulated hosts, one worker each.")
flags.DEFINE_list("rates_mbit", ["0", "500", "1000", "2000"],
                  "Link rates in Mbit/s; 0 is unshaped.")
flags.DEFINE_list("sizes", ["65536", "1048576", "8388608", "33554432",
                            str(RESNET50_GRADIENT_BYTES)],
                  "Message sizes in bytes.")
flags.DEFINE_list("bytes_per_pack", ["0", "4194304"],
                  "All-reduce pack sizes (0: one pack).")
flags.DEFINE_integer("repeats", 3, "Timed calls per size (after a warm-up).",
                     lower_bound=1)
flags.DEFINE_float("rate", None, "Worker: the link rate it runs on.")
flags.DEFINE_string("worker_json", None, "Worker: where the chief writes.")
flags.DEFINE_string("out_json", None, "Write every number here.")
flags.DEFINE_string("name", None, "Prefix of the namespaces (at most 8 "
                    "letters and digits); default lb<pid>.")


def _ints(values, name):
    try:
        numbers = [int(v) for v in values]
    except ValueError:
        raise app.UsageError(f"--{name} takes integers, got {values}") from None
    if any(n < 0 for n in numbers):
        raise app.UsageError(f"--{name} must not be negative, got {numbers}")
    return numbers


def run_worker(values):
    from tf_lbsgd import link_bench  # pylint: disable=import-outside-toplevel
    code = 0
    try:
        link_bench.run_worker(_ints(values.sizes, "sizes"),
                              _ints(values.bytes_per_pack, "bytes_per_pack"),
                              values.repeats, values.worker_json,
                              values.rate or None)
    except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


def run_driver(values):
    rates = _ints(values.rates_mbit, "rates_mbit")
    _ints(values.sizes, "sizes")
    _ints(values.bytes_per_pack, "bytes_per_pack")
    try:
        netns_cluster.check_available()
    except netns_cluster.NamespacesUnavailable as e:
        print(f"bench_links: error: {e}", file=sys.stderr)
        return 2
    start = time.monotonic()
    records, failures = [], []
    with tempfile.TemporaryDirectory(prefix="bench_links_") as tmp:
        for rate in rates:
            out = os.path.join(tmp, f"rate{rate}.json")
            command = [sys.executable, os.path.abspath(__file__),
                       "--role=worker", f"--rate={rate}",
                       f"--worker_json={out}", f"--repeats={values.repeats}",
                       "--sizes=" + ",".join(values.sizes),
                       "--bytes_per_pack=" + ",".join(values.bytes_per_pack)]
            with netns_cluster.EmulatedCluster(values.hosts, rate or None,
                                               values.name) as cluster:
                code = launch.run(command, values.hosts,
                                  placement=netns_cluster.Placement(cluster))
            if code or not os.path.exists(out):
                failures.append(rate)
                continue
            with open(out, encoding="utf-8") as f:
                records += json.load(f)["records"]
    rows = link_model.compare(records)
    print(link_model.table(rows))
    print(f"bench_links: {link_model.verdict_line(rows)}")
    print(f"bench_links: {link_model.verdict_line(rows, 'serial_ratio', 'the ring model + the unshaped time')}")
    wall = time.monotonic() - start
    if values.out_json:
        tables.write_json(values.out_json, {
            "machine": machine.machine_info(), "hosts": values.hosts,
            "records": records, "rows": rows, "failed_rates": failures,
            "wall_seconds": wall})
    print(f"bench_links: total {wall:.0f} s wall", file=sys.stderr)
    return 1 if failures else 0


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if flags.FLAGS.role == "worker":
        run_worker(flags.FLAGS)
    return run_driver(flags.FLAGS)


if __name__ == "__main__":
    app.run(main)
