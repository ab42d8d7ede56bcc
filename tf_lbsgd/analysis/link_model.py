"""The ring all-reduce's bandwidth term against links of known rate (issue 21).

`tools/bench_links.py` measures the gradient all-reduce between hosts of an
emulated cluster (`tf_lbsgd.netns_cluster`) whose links are shaped to a
rate R, and once unshaped (the CPU's own cost). Here each measurement is set
beside the alpha-beta ring model of `collective_costs.ring_allreduce_seconds`
for the same link: beta = 8 / R seconds per byte, alpha from the smallest
message measured on that link (the model's latency term, which a
bandwidth-only link cannot set). A point is link-bound when the model's
bandwidth term is at least `LINK_BOUND_FACTOR` times the unshaped time of the
same message (CPU-bound the other way round, "both" between): there the
model should hold (the issue's goal: within 20%). The table also sets the
measurement beside the model plus the unshaped time, the link's time and the
CPU's own one after the other.
TensorFlow-free.
"""

from tf_lbsgd.analysis import collective_costs
from tf_lbsgd.analysis import tables

LINK_BOUND_FACTOR = 3.0
GOAL_RELATIVE_ERROR = 0.20


def beta_of_rate(rate_mbit):
    """Seconds per byte of a link of `rate_mbit` Mbit/s."""
    return 8.0 / (rate_mbit * 1e6)


def compare(records):
    """Rows of measured beside predicted, one per shaped measurement.

    Args:
        records: dicts {"rate_mbit" (None: unshaped), "workers", "bytes",
            "bytes_per_pack", "seconds"}.

    Returns:
        A list of dicts: the record's keys and "alpha", "predicted",
        "bandwidth_seconds", "unshaped" (seconds, or None if not measured),
        "ratio" (measured / predicted), "link_bound" (bool, or None
        without an unshaped measurement) and "within_goal".
    """
    unshaped = {(r["workers"], r["bytes"], r["bytes_per_pack"]): r["seconds"]
                for r in records if r["rate_mbit"] is None}
    smallest = {}
    for r in records:
        if r["rate_mbit"] is None:
            continue
        key = (r["rate_mbit"], r["workers"], r["bytes_per_pack"])
        if key not in smallest or r["bytes"] < smallest[key]["bytes"]:
            smallest[key] = r
    rows = []
    for r in records:
        if r["rate_mbit"] is None:
            continue
        beta = beta_of_rate(r["rate_mbit"])
        workers = r["workers"]
        small = smallest[(r["rate_mbit"], workers, r["bytes_per_pack"])]
        # The smallest message's time, less its own bandwidth term: the
        # latency 2 (p - 1) alpha.
        latency = max(0.0, small["seconds"] - collective_costs
                      .ring_allreduce_seconds(small["bytes"], workers, 0.0,
                                              beta))
        alpha = latency / (2 * (workers - 1))
        bandwidth = collective_costs.ring_allreduce_seconds(
            r["bytes"], workers, 0.0, beta)
        predicted = collective_costs.ring_allreduce_seconds(
            r["bytes"], workers, alpha, beta)
        floor = unshaped.get((workers, r["bytes"], r["bytes_per_pack"]))
        link_bound = (None if floor is None
                      else bandwidth >= LINK_BOUND_FACTOR * floor)
        cpu_bound = (None if floor is None
                     else floor >= LINK_BOUND_FACTOR * bandwidth)
        ratio = r["seconds"] / predicted
        # The link's time and the CPU's own, one after the other.
        serial = None if floor is None else predicted + floor
        rows.append(dict(
            r, alpha=alpha, predicted=predicted, bandwidth_seconds=bandwidth,
            unshaped=floor, ratio=ratio, link_bound=link_bound,
            cpu_bound=cpu_bound,
            within_goal=abs(ratio - 1) <= GOAL_RELATIVE_ERROR,
            serial_predicted=serial,
            serial_ratio=None if serial is None else r["seconds"] / serial))
    return rows


def host_seconds_per_byte(records, bytes_per_pack, min_bytes=8 * 2 ** 20):
    """The all-reduce's own host cost per byte a worker sends, unshaped.

    The links showed measured = ring model + unshaped time (the CPU's work:
    gRPC copies, the sums) at every link-bound point: a host cost per byte
    added to the link's beta. It is fitted here as the median, over the
    unshaped measurements of at least `min_bytes` in packs of
    `bytes_per_pack`, of seconds / (2 (p - 1) / p * bytes), the bytes a
    ring all-reduce sends per worker.

    Args:
        records: as `compare`'s.
        bytes_per_pack: the pack size of the measurements used.
        min_bytes: smaller messages are latency-bound and left out.

    Raises:
        ValueError: naming the pack size, without such measurements.
    """
    per_byte = sorted(
        r["seconds"] / (2 * (r["workers"] - 1) / r["workers"] * r["bytes"])
        for r in records if r["rate_mbit"] is None and r["workers"] > 1
        and r["bytes_per_pack"] == bytes_per_pack
        and r["bytes"] >= min_bytes)
    if not per_byte:
        raise ValueError(f"no unshaped measurement of at least {min_bytes} "
                         f"bytes in packs of {bytes_per_pack} bytes")
    middle = len(per_byte) // 2
    return (per_byte[middle] if len(per_byte) % 2
            else (per_byte[middle - 1] + per_byte[middle]) / 2)


def verdict(rows, key="ratio"):
    """The goal over the link-bound rows: (held, count, worst ratio) of
    measured / model (`key`: "ratio" for the ring model, "serial_ratio" for
    it plus the CPU's unshaped time)."""
    bound = [r for r in rows if r["link_bound"] and r[key] is not None]
    if not bound:
        return None, 0, None
    worst = max(bound, key=lambda r: abs(r[key] - 1))[key]
    return (all(abs(r[key] - 1) <= GOAL_RELATIVE_ERROR for r in bound),
            len(bound), worst)


def verdict_line(rows, key="ratio", name="the ring model"):
    """One sentence of `verdict`."""
    held, count, worst = verdict(rows, key)
    if not count:
        return f"{name}: no point was link-bound"
    missed = sum(1 for r in rows if r["link_bound"] and r[key] is not None
                 and abs(r[key] - 1) > GOAL_RELATIVE_ERROR)
    outcome = (f"holds within {GOAL_RELATIVE_ERROR:.0%} at all {count}"
               if held else f"misses {GOAL_RELATIVE_ERROR:.0%} at {missed} "
               f"of {count}")
    return (f"{name} {outcome} link-bound points (worst measured / model: "
            f"{worst:.2f})")


def table(rows):
    """The markdown table of `compare`'s rows."""
    def ms(seconds):
        return "-" if seconds is None else f"{1e3 * seconds:.1f}"

    body = []
    for r in sorted(rows, key=lambda r: (r["workers"], r["rate_mbit"],
                                         r["bytes_per_pack"], r["bytes"])):
        bound = ("?" if r["link_bound"] is None else "link"
                 if r["link_bound"] else "CPU" if r["cpu_bound"] else "both")
        body.append([
            r["workers"], f"{r['rate_mbit']:g}",
            f"{r['bytes'] / 2 ** 20:.1f}",
            f"{r['bytes_per_pack'] / 2 ** 20:g}" if r["bytes_per_pack"]
            else "one pack", ms(r["seconds"]), ms(r["predicted"]),
            f"{r['ratio']:.2f}", ms(r["unshaped"]),
            "-" if r["serial_ratio"] is None else f"{r['serial_ratio']:.2f}",
            bound])
    return tables.markdown_table(
        ["hosts", "link Mbit/s", "MiB", "pack MiB", "measured ms",
         "model ms", "measured / model", "unshaped ms",
         "measured / (model + unshaped)", "bound by"], body)
