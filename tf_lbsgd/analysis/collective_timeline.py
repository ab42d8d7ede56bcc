"""When the gradient all-reduce runs against the backward pass, from a trace.

Goyal et al. 2017 (arXiv:1706.02677, Sec. 4) all-reduce each layer's
gradients "as soon as" backprop produces them, so that communication
overlaps the rest of the backward pass. Whether TensorFlow does this is read
from a profiler trace of a worker's training steps (`tf.profiler`, the
`trace_viewer` tool of the profile plugin): per step, the span of the
backward ops on TensorFlow's compute threads, each `CollectiveReduceV2`
(one per pack of `allreduce.GradientAllReduce`) on the collective threads,
how many of them started before the backward pass ended, and the exposed
communication: how long the last one ran past the end of the backward pass.

A step begins at a forward convolution (or dense layer) that follows a
backward op, i.e. the next step's forward pass; its collectives are those
that start from its forward pass to the next one's. Models with neither
convolutions nor dense layers yield no steps.
"""

import dataclasses
import json
import statistics

COLLECTIVE = "CollectiveReduceV2"
_COMPUTE_THREAD = "tf_Compute"
_COLLECTIVE_THREAD = "collective_ops"
_BACKWARD_MARKERS = ("Backprop", "Grad")
# Forward convolutions and dense layers (a matmul fused with its bias): a
# plain MatMul can be a gradient (the dense layer's, and the project's 1x1
# convolutions' in bfloat16, models/conv.py).
_FORWARD_MARKERS = ("Conv2D", "FusedMatMul")


@dataclasses.dataclass(frozen=True)
class Event:
    """One op's execution: `name` (its type), thread name, start and
    duration in microseconds."""
    name: str
    thread: str
    start_us: float
    duration_us: float

    @property
    def end_us(self):
        return self.start_us + self.duration_us


def events_of_trace(trace):
    """The `Event`s of a trace_viewer JSON (dict with `traceEvents`)."""
    threads = {(e.get("pid"), e.get("tid")): e["args"]["name"]
               for e in trace["traceEvents"]
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    return [Event(e["name"], threads.get((e.get("pid"), e.get("tid")), ""),
                  float(e["ts"]), float(e.get("dur", 0.0)))
            for e in trace["traceEvents"] if e.get("ph") == "X"]


def read_events(xplane_path):
    """The `Event`s of a profiler trace (`*.xplane.pb`), converted by the
    profile plugin (`xprof`, pip extra `profile`).

    Raises:
        ValueError: if the plugin cannot read the trace.
    """
    from xprof.convert import raw_to_tool_data  # pylint: disable=import-outside-toplevel
    data, _ = raw_to_tool_data.xspace_to_tool_data([xplane_path],
                                                   "trace_viewer", {})
    if not data:
        raise ValueError(f"the profile plugin could not read {xplane_path}")
    return events_of_trace(json.loads(data))


def is_backward(name):
    """Whether an op type is of the backward pass (a gradient kernel)."""
    return any(marker in name for marker in _BACKWARD_MARKERS)


def is_forward(name):
    """Whether an op type is a forward convolution or dense layer."""
    return (any(marker in name for marker in _FORWARD_MARKERS)
            and not is_backward(name))


@dataclasses.dataclass(frozen=True)
class StepOverlap:
    """One step's backward pass and all-reduce, in ms from its forward start.

    Attributes:
        backward_start_ms, backward_end_ms: first and last backward op.
        collectives: how many `CollectiveReduceV2` ran in the step.
        started_in_backward: how many of them started before the backward
            pass ended.
        communication_ms: the time at least one of them ran.
        exposed_ms: how long the last one ran past the backward pass (0 when
            all ended within it).
    """
    backward_start_ms: float
    backward_end_ms: float
    collectives: int
    started_in_backward: int
    communication_ms: float
    exposed_ms: float

    @property
    def overlapped_ms(self):
        """Communication time hidden behind the backward pass."""
        return max(0.0, self.communication_ms - self.exposed_ms)


def _union_ms(intervals):
    total, end = 0.0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total / 1e3


def step_overlaps(events):
    """The `StepOverlap` of every whole step of `events`, oldest first.

    Every step with a backward op counts (the last one's collectives are
    all that start after its forward pass); steps without collectives are
    kept (collectives = 0).
    """
    compute = sorted((e for e in events
                      if e.thread.startswith(_COMPUTE_THREAD)),
                     key=lambda e: e.start_us)
    collectives = sorted((e for e in events if e.name == COLLECTIVE
                          and e.thread.startswith(_COLLECTIVE_THREAD)),
                         key=lambda e: e.start_us)
    # Forward starts: the first forward op, and each forward op that
    # follows a backward op.
    starts, in_backward, steps = [], True, []
    backward = {}
    for event in compute:
        if is_forward(event.name) and in_backward:
            starts.append(event.start_us)
            backward[len(starts) - 1] = []
            in_backward = False
        elif is_backward(event.name) and starts:
            backward[len(starts) - 1].append(event)
            in_backward = True
    bounds = starts + [float("inf")]
    for index, begin in enumerate(starts):
        ops = backward[index]
        if not ops:
            continue
        end = bounds[index + 1]
        mine = [c for c in collectives if begin <= c.start_us < end]
        back_start = min(e.start_us for e in ops)
        back_end = max(e.end_us for e in ops)
        last = max((c.end_us for c in mine), default=back_end)
        steps.append(StepOverlap(
            backward_start_ms=(back_start - begin) / 1e3,
            backward_end_ms=(back_end - begin) / 1e3,
            collectives=len(mine),
            started_in_backward=sum(c.start_us < back_end for c in mine),
            communication_ms=_union_ms((c.start_us, c.end_us)
                                       for c in mine),
            exposed_ms=max(0.0, last - back_end) / 1e3))
    return steps


def summary(steps):
    """Medians over `steps` (JSON-ready), or None without steps."""
    if not steps:
        return None

    def median(values):
        return float(statistics.median(values))

    return {
        "steps": len(steps),
        "backward_ms": median(s.backward_end_ms - s.backward_start_ms
                              for s in steps),
        "collectives": median(s.collectives for s in steps),
        "started_in_backward": median(s.started_in_backward for s in steps),
        "communication_ms": median(s.communication_ms for s in steps),
        "exposed_ms": median(s.exposed_ms for s in steps),
        "overlapped_ms": median(s.overlapped_ms for s in steps),
    }
