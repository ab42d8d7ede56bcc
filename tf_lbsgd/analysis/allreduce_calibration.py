"""Alpha and beta fitted to a measured allreduce sweep, and its file.

The calibration file is a JSON object: "allreduce_sweep" holds a list of
{"bytes": int, "workers": int, "seconds": float}; optional "step_seconds"
(compute seconds of one training step on one worker), "gradient_bytes"
(allreduced per step) and "images_per_worker" (per step) feed
`comm_model.local_scenario`; other keys are ignored.
"""

import json
import math

import numpy as np


def calibrate(measurements):
    """Least-squares alpha and beta of the ring formula, both >= 0.

    Fits seconds = 2 (p - 1) alpha + 2 (p - 1)/p n beta (a reduction cost
    is folded into beta), leaving out p = 1; if a coefficient comes out
    negative it is 0 and the other is refitted alone.

    Args:
        measurements: iterable of dicts {"bytes", "workers", "seconds"}.

    Returns:
        dict with alpha, beta, bandwidth_bytes_per_second,
        residual_rms_seconds, relative_residual_rms (of residual/seconds),
        count.

    Raises:
        ValueError: fewer than two message sizes with more than one worker.
    """
    rows = [m for m in measurements if int(m["workers"]) > 1]
    if len(rows) < 2 or len({int(m["bytes"]) for m in rows}) < 2:
        raise ValueError("calibration needs measurements of at least two "
                         "message sizes with more than one worker")
    p = np.array([float(m["workers"]) for m in rows])
    n = np.array([float(m["bytes"]) for m in rows])
    seconds = np.array([float(m["seconds"]) for m in rows])
    design = np.stack([2 * (p - 1), 2 * (p - 1) / p * n], axis=1)
    coefficients = np.linalg.lstsq(design, seconds, rcond=None)[0]
    if coefficients.min() < 0:
        coefficients = _best_single_coefficient(design, seconds)
    alpha, beta = (float(c) for c in coefficients)
    residual = seconds - design @ coefficients
    return {
        "alpha": alpha,
        "beta": beta,
        "bandwidth_bytes_per_second": 1 / beta if beta > 0 else math.inf,
        "residual_rms_seconds": float(np.sqrt(np.mean(residual**2))),
        "relative_residual_rms": float(
            np.sqrt(np.mean((residual / seconds)**2))),
        "count": len(rows),
    }


def _best_single_coefficient(design, seconds):
    """Non-negative fit with one coefficient zero (the better one)."""
    best, best_error = None, math.inf
    for keep in range(design.shape[1]):
        column = design[:, keep]
        value = max(0.0, float(column @ seconds / (column @ column)))
        coefficients = np.zeros(design.shape[1])
        coefficients[keep] = value
        error = float(np.sum((seconds - design @ coefficients)**2))
        if error < best_error:
            best, best_error = coefficients, error
    return best


def read_calibration(path):
    """Reads the calibration file (see the module docstring).

    Args:
        path: the JSON file.

    Returns:
        Its object (a dict).

    Raises:
        ValueError: it is not an object with the key "allreduce_sweep".
    """
    with open(path, encoding="utf-8") as stream:
        data = json.load(stream)
    if not isinstance(data, dict) or "allreduce_sweep" not in data:
        raise ValueError(f"{path}: expected an object with the key "
                         f"'allreduce_sweep'")
    return data
