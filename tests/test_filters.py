"""Synaptic filters against hand-made tensors and their invariants (Eq. 1, 7–9)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fragility import FragilityError, synaptic_mask
from fragility.filters import masks, thresholds

THETA = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])  # lo = -1, hi = 1, A = 4 → Δ = 0.5, grid on the weights


def removed(kind, i, A=4, theta=THETA, **kw):
    return (~synaptic_mask(theta, kind, i, A, **kw)).nonzero().flatten().tolist()


def test_h1_removes_at_and_below_threshold_ties_included():
    # t_i = -1 + 0.5 i; θ ≤ t_i removed: ties at the threshold are removed.
    assert [removed("h1", i) for i in range(5)] == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4]]


def test_h2_removes_at_and_above_threshold_ties_included():
    assert [removed("h2", i) for i in range(5)] == [[4], [3, 4], [2, 3, 4], [1, 2, 3, 4], [0, 1, 2, 3, 4]]


def test_h3_windows_are_half_open_below_closed_above():
    # window i = (t_i − Δ/2, t_i + Δ/2] with t_i = -1 + 0.5 i: each grid weight falls in its own window.
    assert [removed("h3", i) for i in range(5)] == [[0], [1], [2], [3], [4]]
    # a weight exactly on a window edge belongs to the lower window (closed above)
    theta = torch.tensor([-1.0, -0.75, 1.0])
    assert removed("h3", 0, theta=theta) == [0, 1]
    assert removed("h3", 1, theta=theta) == []


def test_thresholds_end_exactly_at_the_range():
    lo, hi = -0.3, 0.7
    for kind in ("h1", "h3"):
        t = thresholds(kind, 7, lo, hi)
        assert t[0] == lo and t[-1] == hi
    t2 = thresholds("h2", 7, lo, hi)
    assert t2[0] == hi and t2[-1] == lo


def test_explicit_range_for_global_analysis():
    # with the network-wide range [-2, 2], a layer inside [-1, 1] keeps everything at i = 0 (t_0 = -2)
    assert removed("h1", 0, lo=-2.0, hi=2.0) == []
    assert removed("h1", 4, lo=-2.0, hi=2.0) == [0, 1, 2, 3, 4]


def test_constant_layer_h3_still_partitions():
    theta = torch.full((6,), 0.25)
    hits = sum((~synaptic_mask(theta, "h3", i, 5)).int() for i in range(6))
    assert torch.equal(hits, torch.ones(6, dtype=torch.int32))


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(4), "all zero"),
    (torch.tensor([1.0, float("nan")]), "NaN"),
    (torch.tensor([1.0, float("inf")]), "NaN or Inf"),
])
def test_bad_weights_are_refused(bad, match):
    with pytest.raises(FragilityError, match=match):
        synaptic_mask(bad, "h1", 0, 4)


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "h4"}, "unknown filter"),
    ({"A": 0}, "A must be the number of threshold intervals, a whole number in 1..10000; got 0"),
    ({"A": 2.5}, "A must be the number of threshold intervals"),
    ({"A": True}, "A must be the number of threshold intervals"),
    ({"i": 5}, "the threshold index i must be a whole number in 0..4; got 5"),
    ({"i": -1}, "threshold index"),
    ({"lo": float("nan")}, "lo must be a finite number; got nan"),
    ({"hi": float("inf")}, "hi must be a finite number"),
    ({"theta": [0.1, 0.2]}, "theta must be a floating-point tensor"),
])
def test_bad_arguments_are_refused(kwargs, match):
    args = {"theta": THETA, "kind": "h1", "i": 0, "A": 4, **kwargs}
    with pytest.raises(FragilityError, match=match):
        synaptic_mask(**args)


weights = arrays(np.float32, st.integers(1, 200), elements=st.floats(-3, 3, width=32)).filter(lambda a: a.any())


@settings(max_examples=60, deadline=None)
@given(weights, st.integers(1, 30))
def test_h3_windows_partition_every_weight(w, A):
    theta = torch.from_numpy(w)
    hits = (~masks(theta, "h3", A)).sum(0)
    assert torch.equal(hits, torch.ones_like(hits))


@settings(max_examples=60, deadline=None)
@given(weights, st.integers(1, 30), st.sampled_from(["h1", "h2"]))
def test_h1_h2_removed_counts_monotone_from_one_to_all(w, A, kind):
    theta = torch.from_numpy(w)
    counts = (~masks(theta, kind, A)).sum(1)
    assert counts[0] >= 1
    assert counts[-1] == theta.numel()
    assert bool((counts[1:] >= counts[:-1]).all())
    # removal sets are nested, not just their sizes
    keep = masks(theta, kind, A)
    assert bool((keep[1:] <= keep[:-1]).all())


@settings(max_examples=40, deadline=None)
@given(weights, st.integers(1, 30), st.data())
def test_h1_and_h2_match_their_definitions(w, A, data):
    theta = torch.from_numpy(w).double()
    i = data.draw(st.integers(0, A))
    lo, hi = float(theta.min()), float(theta.max())
    t1, t2 = thresholds("h1", A, lo, hi)[i], thresholds("h2", A, lo, hi)[i]
    assert torch.equal(synaptic_mask(theta, "h1", i, A), ~(theta <= t1))
    assert torch.equal(synaptic_mask(theta, "h2", i, A), ~(theta >= t2))


@settings(max_examples=30, deadline=None)
@given(st.lists(weights, min_size=2, max_size=4), st.integers(1, 20))
def test_global_thresholds_span_all_layers(layers, A):
    thetas = [torch.from_numpy(w) for w in layers]
    lo = min(float(t.min()) for t in thetas)
    hi = max(float(t.max()) for t in thetas)
    for kind in ("h1", "h2"):
        total = [sum(int((~synaptic_mask(t, kind, i, A, lo, hi)).sum()) for t in thetas) for i in (0, A)]
        assert total[0] >= 1 and total[1] == sum(t.numel() for t in thetas)
    h3 = sum(sum(int((~synaptic_mask(t, "h3", i, A, lo, hi)).sum()) for t in thetas) for i in range(A + 1))
    assert h3 == sum(t.numel() for t in thetas)


def test_numpy_integers_are_numbers():
    np = pytest.importorskip("numpy")
    assert torch.equal(synaptic_mask(THETA, "h1", np.int64(1), np.int32(4)), synaptic_mask(THETA, "h1", 1, 4))
