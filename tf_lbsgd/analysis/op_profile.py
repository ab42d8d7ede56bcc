"""Where a training step's time goes: a profiler trace by kind of op.

Reads a TensorFlow profiler trace (`<logdir>/plugins/profile/<run>/
*.xplane.pb`, as `tf.profiler.experimental` or `profile_steps` write it)
with the profile plugin's own converter (`xprof`, TensorBoard's Profile
tab, `framework_op_stats`) and sums each op's self time on the host into
the kinds that matter for a convolutional network's step: the three
convolution passes, the matmuls, batch norm, casts, ReLU, the adds of
residuals and gradients, the optimizer's update, layout and copies, and
the rest. Op times are those of the executor's threads: ops that run side
by side each count in full, so the sum can exceed the wall time.
"""

import glob
import json
import os

_KINDS = (
    # (kind, op types whose name contains any of these, oneDNN's included).
    ("conv backward: weights", ("Conv2DBackpropFilter",)),
    ("conv backward: input", ("Conv2DBackpropInput",)),
    ("conv forward", ("Conv2D",)),
    ("matmul", ("MatMul",)),
    ("batch norm", ("BatchNorm",)),
    ("cast", ("Cast",)),
    ("relu", ("Relu",)),
    ("adds", ("AddV2", "AddN", "BiasAdd")),
    ("optimizer update", ("ApplyMomentum", "ApplyKerasMomentum",
                          "AssignVariable", "AssignAdd", "AssignSub")),
    ("layout and copies", ("Transpose", "Pad", "Slice", "Reshape", "Tile",
                           "ToTf", "Concat", "Identity")),
    ("pooling", ("Pool", "Mean")),
    ("loss and metrics", ("Softmax", "InTopK", "ArgMax", "Sum")),
)
OTHER = "other"
_IDLE = "IDLE"


def kind_of(op_type, op_name="", update_scope=None):
    """The kind (one of `_KINDS`' or `OTHER`) of a TensorFlow op type, e.g.
    '_MklNativeConv2DBackpropFilter' -> 'conv backward: weights'; any op
    named under the optimizer's scope `update_scope` (e.g. 'momentum_sgd')
    is the 'optimizer update'."""
    if update_scope and f"/{update_scope}/" in op_name:
        return "optimizer update"
    for kind, markers in _KINDS:
        if any(marker in op_type for marker in markers):
            return kind
    return OTHER


def find_trace(logdir):
    """The newest `*.xplane.pb` under `logdir`/plugins/profile/.

    Raises:
        FileNotFoundError: if there is none.
    """
    paths = glob.glob(os.path.join(logdir, "plugins", "profile", "*",
                                   "*.xplane.pb"))
    if not paths:
        raise FileNotFoundError(f"no profiler trace (*.xplane.pb) under "
                                f"{os.path.join(logdir, 'plugins', 'profile')}")
    return max(paths, key=os.path.getmtime)


def op_self_times(xplane_path):
    """Each op of a trace: dicts of `type`, `name` and `self_us` (total
    self time on the host), from the profile plugin's
    `framework_op_stats` tool; the executor's idle time is left out.

    Raises:
        ImportError: without the profile plugin (`pip install
            'tf_lbsgd[profile]'`).
        ValueError: if the plugin cannot read the trace.
    """
    from xprof.convert import raw_to_tool_data  # pylint: disable=import-outside-toplevel
    data, _ = raw_to_tool_data.xspace_to_tool_data(
        [xplane_path], "framework_op_stats", {})
    if not data:
        raise ValueError(f"the profile plugin could not read {xplane_path}")
    return rows_of_table(json.loads(data))


def rows_of_table(table):
    """The op rows of a `framework_op_stats` table (a DataTable dict, or
    a list of them whose first is the ops' table)."""
    if isinstance(table, list):
        table = table[0]
    labels = [column["label"] for column in table["cols"]]
    index = {name: labels.index(label) for name, label in (
        ("type", "Operation Type"), ("name", "Operation Name"),
        ("self_us", "Total self-time (us)"))}
    rows = []
    for row in table["rows"]:
        values = [cell["v"] if cell else None for cell in row["c"]]
        if values[index["type"]] == _IDLE:
            continue
        rows.append({"type": values[index["type"]],
                     "name": values[index["name"]],
                     "self_us": float(values[index["self_us"]])})
    return rows


def breakdown(rows, steps, update_scope=None):
    """Milliseconds per step of each kind of op, largest first.

    Args:
        rows: `op_self_times`' rows of a trace of `steps` training steps.
        steps: how many steps the trace holds.
        update_scope: the optimizer's name scope (`kind_of`).

    Returns:
        A list of dicts: `kind`, `ms_per_step`, `share` (of the ops' sum)
        and `op_types` (the kind's op types, each with its ms per step,
        largest first).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    by_type = {}
    for row in rows:
        key = (kind_of(row["type"], row["name"], update_scope), row["type"])
        by_type[key] = by_type.get(key, 0.0) + row["self_us"]
    total = sum(by_type.values()) or 1.0
    kinds = {}
    for (kind, op_type), micros in by_type.items():
        kinds.setdefault(kind, []).append((op_type, micros / 1000.0 / steps))
    result = []
    for kind, types in kinds.items():
        types.sort(key=lambda item: -item[1])
        milliseconds = sum(value for _, value in types)
        result.append({"kind": kind, "ms_per_step": milliseconds,
                       "share": milliseconds * 1000.0 * steps / total,
                       "op_types": types})
    result.sort(key=lambda item: -item["ms_per_step"])
    return result


def breakdown_table(kinds, step_ms, top_types=2):
    """A markdown table of `breakdown`'s kinds for a step of `step_ms`."""
    lines = [f"step: {step_ms:.0f} ms wall; ops: "
             f"{sum(k['ms_per_step'] for k in kinds):.0f} ms of op time per "
             f"step (ops side by side each count in full)", "",
             "| kind of op | ms/step | share of op time | largest op types |",
             "|---|---|---|---|"]
    for kind in kinds:
        types = ", ".join(f"{name} {value:.0f}"
                          for name, value in kind["op_types"][:top_types])
        lines.append(f"| {kind['kind']} | {kind['ms_per_step']:.0f} | "
                     f"{100 * kind['share']:.1f}% | {types} |")
    return "\n".join(lines)
