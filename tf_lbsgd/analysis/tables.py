"""The one markdown table and JSON writer of reports and benchmarks."""

import json
import os


def format_cell(value, digits=3):
    """A table cell: floats to `digits` significant digits (one more from
    1000 up), None as an empty cell, anything else as `str`."""
    if value is None:
        return ""
    if isinstance(value, float):
        return (f"{value:.{digits + 1}g}" if abs(value) >= 1000
                else f"{value:.{digits}g}")
    return str(value)


def markdown_table(header, rows, align=None, cell=format_cell):
    """A markdown table.

    Args:
        header: the column names.
        rows: iterables of cell values, one per column.
        align: optional string of one character per column, `l` (left) or
            `r` (right); None leaves alignment to the renderer.
        cell: formats one value (default `format_cell`).

    Returns:
        The table's lines joined by newlines (no trailing newline).

    Raises:
        ValueError: for a row or `align` of another width than the header.
    """
    header = list(header)
    if align is not None and len(align) != len(header):
        raise ValueError(f"align {align!r} has {len(align)} columns, the "
                         f"header {len(header)}")
    rule = ["---:" if a == "r" else "---" for a in (align or "l" * len(
        header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"row {row!r} has {len(row)} cells, the header "
                             f"{len(header)}")
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def jsonable(value):
    """`json.dump`'s `default`: numpy scalars and arrays as Python values."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars.
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {value!r}")


def write_json(path, payload):
    """Writes `payload` as indented JSON, atomically (a temporary file
    renamed into place), creating the directory; returns `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=jsonable)
        f.write("\n")
    os.replace(temporary, path)
    return path
