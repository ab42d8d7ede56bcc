"""tf_lbsgd.analysis.collective_timeline: when each pack's all-reduce ran
against the backward pass, on hand-made traces (times in microseconds)."""

import pytest

from tf_lbsgd.analysis import collective_timeline as timeline

COMPUTE, COLLECTIVE = "tf_Compute/1", "collective_ops/7"


def _trace(events):
    """A trace_viewer JSON of (name, thread, start, duration) tuples."""
    threads = sorted({thread for _, thread, _, _ in events})
    tids = {thread: i for i, thread in enumerate(threads)}
    return {"traceEvents": [
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": tids[t],
         "args": {"name": t}} for t in threads] + [
        {"ph": "X", "name": name, "pid": 1, "tid": tids[thread], "ts": start,
         "dur": duration} for name, thread, start, duration in events]}


def _step(begin, packs_at):
    """A step at `begin`: forward 0-1000 us, backward 1000-3000 us, the
    update at 3500; one 400 us collective at each offset of `packs_at`."""
    events = [("_MklNativeConv2D", COMPUTE, begin, 500),
              ("_MklNativeFusedMatMul", COMPUTE, begin + 600, 100),
              ("_MklMatMul", COMPUTE, begin + 900, 50),  # The dense gradient.
              ("ReluGrad", COMPUTE, begin + 1000, 100),
              ("_MklNativeConv2DBackpropFilter", COMPUTE, begin + 1200, 1000),
              ("_MklMatMul", COMPUTE, begin + 2300, 100),  # A 1x1 gradient.
              ("_MklNativeConv2DBackpropInput", COMPUTE, begin + 2500, 500),
              ("ResourceApplyMomentum", COMPUTE, begin + 3500, 100)]
    events += [(timeline.COLLECTIVE, COLLECTIVE, begin + at, 400)
               for at in packs_at]
    # The collective's own bookkeeping is not a collective.
    events.append(("CollectiveExecutor::RunClosure", COLLECTIVE,
                   begin + packs_at[0], 10))
    return events


def test_each_step_counts_packs_started_in_backprop_and_exposed_time():
    events = timeline.events_of_trace(_trace(
        _step(0, [1500, 2000, 3000]) + _step(5000, [3000, 3400])))
    first, second = timeline.step_overlaps(events)
    assert (first.backward_start_ms, first.backward_end_ms) == (1.0, 3.0)
    assert (first.collectives, first.started_in_backward) == (3, 2)
    # 1500-1900, 2000-2400, 3000-3400: 1.2 ms busy; 0.4 ms past 3000 us.
    assert first.communication_ms == pytest.approx(1.2)
    assert first.exposed_ms == pytest.approx(0.4)
    assert first.overlapped_ms == pytest.approx(0.8)
    # Nothing overlaps: the packs start when backprop has ended, in a row.
    assert (second.collectives, second.started_in_backward) == (2, 0)
    assert second.communication_ms == pytest.approx(0.8)  # 3000-3800.
    assert second.exposed_ms == pytest.approx(0.8)
    assert second.overlapped_ms == 0.0


def test_overlapping_collectives_count_once_and_summary_takes_medians():
    events = timeline.events_of_trace(_trace(
        _step(0, [1500, 1700]) + _step(5000, [1100, 1200])
        + _step(10000, [2900])))
    steps = timeline.step_overlaps(events)
    assert [s.communication_ms for s in steps] == pytest.approx(
        [0.6, 0.5, 0.4])  # 1500-2100; 1100-1600; 2900-3300.
    assert [s.exposed_ms for s in steps] == pytest.approx([0.0, 0.0, 0.3])
    summary = timeline.summary(steps)
    assert summary["steps"] == 3
    assert summary["backward_ms"] == pytest.approx(2.0)
    assert summary["started_in_backward"] == 2
    assert summary["exposed_ms"] == pytest.approx(0.0)
    assert summary["communication_ms"] == pytest.approx(0.5)
    assert timeline.summary([]) is None


def test_a_trace_without_convolutions_or_dense_layers_has_no_steps():
    events = timeline.events_of_trace(_trace([
        ("ReluGrad", COMPUTE, 0, 10), ("AddV2", COMPUTE, 20, 10),
        (timeline.COLLECTIVE, COLLECTIVE, 40, 10)]))
    assert timeline.step_overlaps(events) == []


@pytest.mark.parametrize("name, forward, backward", [
    ("_MklNativeConv2D", True, False),
    ("_MklNativeFusedConv2D", True, False),
    ("_MklNativeFusedMatMul", True, False),
    ("_MklMatMul", False, False),
    ("_MklNativeConv2DBackpropFilter", False, True),
    ("_MklNativeFusedBatchNormGradV3", False, True),
    ("BiasAddGrad", False, True),
])
def test_op_kinds(name, forward, backward):
    assert timeline.is_forward(name) == forward
    assert timeline.is_backward(name) == backward
