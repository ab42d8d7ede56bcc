"""Alpha-beta communication model of the paper's allreduce, at scale.

Usage:
    python tools/comm_model.py [--calibration_json=FILE] \\
        [--out_json=FILE] [--out_png=FILE] [--max_gpus=1024] [...]

Prints one markdown table per scenario (paper, h100 and, with
--calibration_json holding "step_seconds", local), the paper scenario's
sensitivity to latency and bucket size and the paper's claims next to the
model's (scenarios: tf_lbsgd.analysis.comm_model; calibration file:
tf_lbsgd.analysis.allreduce_calibration). --out_json gets every number
(parameters, rows, calibration); --out_png a plot of efficiency and iteration
time against the number of GPUs (log2 axis) with the paper's ~90% at 256 GPUs
marked.

Every field of PaperSetting and H100Setting (but max_gpus) is a flag
--paper_<field> / --h100_<field>; --max_gpus is the h100 scenario's.
"""

import dataclasses

from absl import app
from absl import flags

from tf_lbsgd.analysis import allreduce_calibration
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


def main(argv):
    """Computes the scenarios, prints their report, writes JSON and PNG."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    paper, h100 = settings_from_flags(flags.FLAGS)
    calibration = None
    if flags.FLAGS.calibration_json:
        calibration = allreduce_calibration.read_calibration(
            flags.FLAGS.calibration_json)
    result = comm_model.analyse(paper, h100, calibration)
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
