"""Alpha-beta communication model of the paper's allreduce, at scale.

Usage:
    python tools/comm_model.py [--calibration_json=FILE] \\
        [--links_json=docs/performance/links.json] \\
        [--out_json=FILE] [--out_png=FILE] [--max_gpus=1024] [...]

Prints one markdown table per scenario (paper, h100 and, with
--calibration_json holding "step_seconds", local), the paper scenario's
sensitivity to latency and bucket size and the paper's claims next to the
model's (scenarios: tf_lbsgd.analysis.comm_model; calibration file:
tf_lbsgd.analysis.allreduce_calibration). --out_json gets every number
(parameters, rows, calibration); --out_png a plot of efficiency and iteration
time against the number of GPUs (log2 axis) with the paper's ~90% at 256 GPUs
marked.

With --links_json (tools/bench_links.py's measurement on emulated links)
the paper and h100 scenarios are projected again with the host cost per byte
of this machine's gRPC all-reduce added to their links ("+ gRPC host"): what
the links showed the model lacks when the transport's copies run on the
host (tf_lbsgd.analysis.comm_model, HOST_COST).

Every field of PaperSetting and H100Setting (but max_gpus) is a flag
--paper_<field> / --h100_<field>; --max_gpus is the h100 scenario's.
"""

import dataclasses
import json

from absl import app
from absl import flags

from tf_lbsgd.analysis import allreduce_calibration
from tf_lbsgd.analysis import collective_costs
from tf_lbsgd.analysis import comm_model
from tf_lbsgd.analysis import tables

SETTINGS = (("paper", comm_model.PaperSetting),
            ("h100", comm_model.H100Setting))


def define_flags(flag_values=flags.FLAGS):
    """Defines the command-line flags of this tool in `flag_values`."""
    flags.DEFINE_string("calibration_json", None, "JSON with the key "
                        "'allreduce_sweep' (and optionally 'step_seconds', "
                        "'gradient_bytes'); without it calibration is "
                        "skipped.", flag_values=flag_values)
    flags.DEFINE_string("links_json", None, "tools/bench_links.py's JSON "
                        "(key 'records'): project the paper and h100 "
                        "scenarios again with its unshaped host cost per "
                        "byte.", flag_values=flag_values)
    flags.DEFINE_float("links_pack_mib", 4.0, "Pack size (MiB) of the "
                       "--links_json measurements the host cost is fitted "
                       "on; 0: one pack.", flag_values=flag_values)
    flags.DEFINE_string("out_json", None, "Where to write all numbers.",
                        flag_values=flag_values)
    flags.DEFINE_string("out_png", None, "Where to write the plot.",
                        flag_values=flag_values)
    flags.DEFINE_integer("max_gpus", comm_model.H100Setting.max_gpus,
                         "Largest GPU count of the h100 scenario.",
                         flag_values=flag_values)
    for prefix, setting in SETTINGS:
        for field in dataclasses.fields(setting):
            if field.name == "max_gpus":
                continue
            define = (flags.DEFINE_integer if field.type in (int, "int")
                      else flags.DEFINE_float)
            define(f"{prefix}_{field.name}", field.default,
                   f"{setting.__name__}.{field.name} (see its comments).",
                   flag_values=flag_values)


def settings_from_flags(flag_values):
    """The PaperSetting and H100Setting of parsed `flag_values`."""
    settings = []
    for prefix, setting in SETTINGS:
        values = {field.name: flag_values[f"{prefix}_{field.name}"].value
                  for field in dataclasses.fields(setting)
                  if field.name != "max_gpus"}
        if prefix == "h100":
            values["max_gpus"] = flag_values.max_gpus
        settings.append(setting(**values))
    return settings


def read_link_records(path):
    """The 'records' of tools/bench_links.py's JSON at `path`.

    Raises:
        app.UsageError: naming the file, when it cannot be read or has no
            records.
    """
    try:
        with open(path, encoding="utf-8") as f:
            records = json.load(f).get("records")
    except (OSError, ValueError, AttributeError) as e:
        raise app.UsageError(f"--links_json={path}: cannot read it: "
                             f"{e}") from e
    if not records:
        raise app.UsageError(f"--links_json={path}: no 'records' (write it "
                             f"with tools/bench_links.py --out_json)")
    return records


def main(argv):
    """Computes the scenarios, prints their report, writes JSON and PNG."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    paper, h100 = settings_from_flags(flags.FLAGS)
    calibration = None
    if flags.FLAGS.calibration_json:
        calibration = allreduce_calibration.read_calibration(
            flags.FLAGS.calibration_json)
    links = None
    if flags.FLAGS.links_json:
        links = read_link_records(flags.FLAGS.links_json)
    try:
        result = comm_model.analyse(
            paper, h100, calibration, links,
            round(flags.FLAGS.links_pack_mib * collective_costs.MIB))
    except ValueError as e:
        raise app.UsageError(f"--links_json={flags.FLAGS.links_json}: "
                             f"{e}") from e
    print(comm_model.report(result))
    if flags.FLAGS.out_json:
        tables.write_json(flags.FLAGS.out_json, result)
        print(f"wrote {flags.FLAGS.out_json}")
    if flags.FLAGS.out_png:
        comm_model.write_plot(list(result["scenarios"].values()),
                              flags.FLAGS.out_png)
        print(f"wrote {flags.FLAGS.out_png}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
