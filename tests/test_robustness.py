"""Hostile but fair input: every public function, given a bad argument drawn by hypothesis, answers with one
FragilityError naming it — or, when the argument is in fact valid, with a correct result — and never with another
exception or a silent result; the caller's model always comes back exactly as it was."""
import functools
import math

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import fragility as fr
from fragility import FragilityError, attacks, checks
from fragility.studies import batchnorm, neurons, removal

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ANYTHING = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.integers(10**9, 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([np.int64(3), np.float32("nan"), np.float64(-1)]),
    st.text(max_size=6), st.sampled_from(["h1", "auto", "fixed", "global", "", "clean"]),
    st.lists(st.integers(-2, 5), max_size=3), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.sampled_from([torch.tensor(float("nan")), torch.zeros(0), torch.ones(2, 2), object()]),
)


def net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    model[1].running_var.fill_(1.5)
    return model.eval()


X = torch.randn(12, 1, 6, 6, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    Y = net()(X).argmax(1)  # labels the network gets right, so that ε can be searched


def outcome(call):
    """"ok" with the result, or "refused" with a one-line message; anything else fails the test."""
    try:
        return "ok", call()
    except FragilityError as err:
        message = str(err)
        assert message and "\n" not in message and "Traceback" not in message, message
        return "refused", message


def whole(low=1, high=None):
    return lambda v: checks.is_whole(v) and low <= v and (high is None or v <= high)


def real(ok=lambda v: True):
    return lambda v: checks.is_real(v) and ok(float(v))


def named(value) -> bool:
    """A string that is a filter or a rule name: valid for those arguments."""
    return isinstance(value, str)


def fractions_ok(v):
    if isinstance(v, (bool, str, dict)) or v is None:
        return False
    try:
        arr = np.atleast_1d(np.asarray(v, dtype=float))
    except (TypeError, ValueError):
        return False
    return bool(arr.ndim == 1 and arr.size > 0 and np.all((arr >= 0) & (arr <= 1)) and len(np.unique(arr)) == arr.size)


SWEEPING = dict(model=net(), x=X, y=Y, A=2, epsilon=0.1, progress=False)
# (function, its valid arguments, the argument to replace, whether a value is valid for it: True it must be accepted,
# False it must be refused, None either)
CASES = {
    "synaptic_mask A": (fr.synaptic_mask, dict(theta=torch.randn(20), kind="h1", i=1, A=4), "A", whole(1, 10_000)),
    "synaptic_mask i": (fr.synaptic_mask, dict(theta=torch.randn(20), kind="h1", i=1, A=4), "i", whole(0, 4)),
    "synaptic_mask lo": (fr.synaptic_mask, dict(theta=torch.randn(20), kind="h1", i=1, A=4, hi=10.0), "lo",
                         lambda v: v is None or real(lambda x: x <= 10)(v)),
    "synaptic_mask kind": (fr.synaptic_mask, dict(theta=torch.randn(20), kind="h1", i=1, A=4), "kind",
                           lambda v: isinstance(v, str) and v in fr.FILTERS),
    "sweep A": (fr.sweep, SWEEPING, "A", lambda v: whole(1, 10_000)(v) and (v < 50 or None)),
    "sweep epsilon": (fr.sweep, SWEEPING, "epsilon", lambda v: real(lambda x: x >= 0)(v) or (v == "auto" or False)
                      and None),
    "sweep batch_size": (fr.sweep, SWEEPING, "batch_size", whole(1)),
    "sweep ratio": (fr.sweep, SWEEPING, "ratio", real(lambda x: 0 < x < 1)),
    "sweep filters": (fr.sweep, SWEEPING, "filters", lambda v: isinstance(v, str) and v in fr.FILTERS),
    "sweep layers": (fr.sweep, SWEEPING, "layers", lambda v: True if v is None or isinstance(v, list) and not v
                     else None),
    "sweep x": (fr.sweep, SWEEPING, "x", lambda v: False),
    "sweep y": (fr.sweep, SWEEPING, "y", lambda v: False),
    "sweep device": (fr.sweep, SWEEPING, "device", lambda v: True if v is None else None),
    "fgsm epsilon": (fr.fgsm, dict(model=net(), x=X, y=Y, epsilon=0.1), "epsilon", real(lambda x: x >= 0)),
    "search_epsilon ratio": (fr.search_epsilon, dict(model=net(), x=X, y=Y), "ratio",
                             lambda v: None if real(lambda x: 0 < x < 1)(v) else False),
    "search_epsilon max_epsilon": (fr.search_epsilon, dict(model=net(), x=X, y=Y), "max_epsilon",
                                   lambda v: None if real(lambda x: x > 0)(v) else False),
    "largest_epsilon grid": (fr.largest_epsilon, dict(model=net(), x=X, y=Y), "grid",
                             lambda v: None if whole(1, 10_000)(v) else False),
    "epsilon_curve epsilons": (attacks.epsilon_curve, dict(model=net(), x=X, y=Y, epsilons=[0.0, 0.1]), "epsilons",
                               lambda v: isinstance(v, list) and len(v) > 0 and all(
                                   real(lambda x: x >= 0)(e) for e in v)),
    "characterize tol": (fr.characterize, dict(scores=xr.DataArray([0.1, -0.1])), "tol", real(lambda x: x >= 0)),
    "scores filter": (lambda **k: fr.scores(SWEEP, **k), dict(filter="h1"), "filter",
                      lambda v: isinstance(v, str) and v in ("h1", "h2", "h3", "combined")),
    "scores rule": (lambda **k: fr.scores(SWEEP, **k), dict(rule="rectangle"), "rule",
                    lambda v: isinstance(v, str) and v in ("rectangle", "trapezoid", "simpson")),
    "scaled ds": (fr.scaled, dict(ds=None), "ds", lambda v: False),
    "random_removal draws": (removal.random_removal, dict(model=net(), x=X, y=Y, p=[0.5], progress=False), "draws",
                             lambda v: whole(1, 1000)(v) and (v < 20 or None)),
    "random_removal p": (removal.random_removal, dict(model=net(), x=X, y=Y, draws=1, progress=False), "p",
                         fractions_ok),
    "nodal_dropout epsilon": (neurons.nodal_dropout, dict(model=net(), x=X, y=Y, epsilon=0.1, progress=False),
                              "epsilon", real(lambda x: x >= 0)),
    "defense_factors compress": (neurons.defense_factors, dict(fragility=xr.DataArray([0.1, 0.2], dims="neuron")),
                                 "compress", real(lambda x: 0 < x <= 1)),
}
SWEEP = fr.sweep(net(), X, Y, A=2, epsilon=0.1, progress=False)


@pytest.mark.parametrize("case", list(CASES))
@SETTINGS
@given(value=ANYTHING)
def test_bad_arguments_are_refused_with_one_clear_message(case, value):
    fn, arguments, name, valid = CASES[case]
    verdict = valid(value)
    result, answer = outcome(lambda: fn(**{**arguments, name: value}))
    if verdict is False:
        assert result == "refused", f"{case}: {value!r} was accepted"
    if verdict is True:
        assert result == "ok", f"{case}: {value!r} was refused: {answer}"
    if verdict is False and name not in ("x", "y", "ds"):  # refused because of the argument: it is named
        assert name in answer or name == "kind" and "filter" in answer, answer


@given(st.sampled_from([float("nan"), float("inf"), -float("inf")]), st.integers(0, 11))
@settings(max_examples=15, deadline=None)
def test_non_finite_inputs_are_never_swept(value, where):
    x = X.clone()
    x.view(-1)[where * 7] = value
    for fn in (fr.sweep, fr.sweep_naive):
        result, answer = outcome(functools.partial(fn, net(), x, Y, A=2, epsilon=0.1, progress=False))
        assert result == "refused" and "NaN or infinite" in answer


def test_numpy_scalars_dict_batches_and_float64_models():
    ds = fr.sweep(net(), X, Y, A=np.int64(2), epsilon=np.float32(0.1), batch_size=np.int32(6), filters="h1",
                  progress=False)
    assert list(ds["filter"].values) == ["h1"] and ds.sizes["alpha"] == 3
    double = net().double()
    assert fr.sweep(double, X, Y, A=2, epsilon=0.1, progress=False)["accuracy"].notnull().all()
    loader = torch.utils.data.DataLoader([{"image": x, "label": y} for x, y in zip(X, Y)], batch_size=4)
    result, answer = outcome(lambda: fr.sweep(net(), loader, A=2, epsilon=0.1, progress=False))
    assert result == "refused" and "keys image, label" in answer and "collate_fn" in answer
    pairs = torch.utils.data.DataLoader(list(zip(X, Y)), batch_size=5)
    np.testing.assert_array_equal(fr.sweep(net(), pairs, A=2, epsilon=0.1, progress=False)["accuracy"],
                                  fr.sweep(net(), X, Y, A=2, epsilon=0.1, progress=False)["accuracy"])


def test_search_epsilon_never_returns_a_negative_or_non_finite_epsilon():
    for bad in (-1, 0, float("nan"), float("inf")):
        assert outcome(functools.partial(fr.search_epsilon, net(), X, Y, max_epsilon=bad))[0] == "refused"


def snapshot(model):
    """Everything a call could change about a model."""
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "modes": [m.training for m in model.modules()],
            "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            "flags": [p.requires_grad for p in model.parameters()],
            "hooks": [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()],
            "devices": {p.device for p in model.parameters()},
            "layout": [p.is_contiguous() for p in model.parameters()],
            "momenta": [getattr(m, "momentum", None) for m in model.modules()]}


def same(a, b):
    assert a["modes"] == b["modes"] and a["flags"] == b["flags"] and a["hooks"] == b["hooks"]
    assert a["devices"] == b["devices"] and a["layout"] == b["layout"] and a["momenta"] == b["momenta"]
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert all((g is None and h is None) or torch.equal(g, h) for g, h in zip(a["grads"], b["grads"]))


def awkward():
    """A model in train mode with one submodule in eval mode, a hook, gradients and a frozen parameter."""
    model = net().train()
    model[1].eval()
    model[4].register_forward_hook(lambda *_: None)
    model(X).sum().backward()
    model[0].bias.requires_grad_(False)
    return model


CALLS = {
    "sweep": lambda m, **k: fr.sweep(m, X, Y, A=2, epsilon=0.1, progress=False, **k),
    "sweep_naive": lambda m, **k: fr.sweep_naive(m, X, Y, A=2, epsilon=0.1, progress=False, **k),
    "fgsm": lambda m, **k: fr.fgsm(m, X, Y, 0.1, **k),
    "search_epsilon": lambda m, **k: fr.search_epsilon(m, X, Y, **k),
    "largest_epsilon": lambda m, **k: fr.largest_epsilon(m, X, Y, **k),
    "nodal_dropout": lambda m, **k: neurons.nodal_dropout(m, X, Y, epsilon=0.1, progress=False, **k),
    "random_removal": lambda m, **k: removal.random_removal(m, X, Y, p=[0.5], draws=1, progress=False, **k),
    "remove_layers": lambda m, **k: batchnorm.remove_layers(m, ["0"], X, Y, X, **k),
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("fails", [False, True])
def test_the_model_comes_back_exactly_as_it_was(call, fails):
    model = awkward()
    before = snapshot(model)
    result, _ = outcome(lambda: CALLS[call](model, **({"batch_size": -1} if fails else {})))
    assert result == ("refused" if fails else "ok") or not fails
    same(before, snapshot(model))


def test_numbers_rules_words():
    assert checks.real(0, 1, open_low=True).what == "a finite number > 0 and ≤ 1"
    assert not checks.real()(math.nan) and not checks.whole()(True) and checks.whole()(np.int16(3))
