"""Fragile and robust neurons by nodal dropout, where FGSM hits, and the compress/amplify defense (seed 002, SPEC §10).

A neuron is one output channel of a Conv2d (one output unit of a Linear). Nodal dropout removes it by zeroing its
weights and its bias, so the channel outputs exactly 0. The network is tested on clean inputs and on FGSM inputs
crafted once against the unperturbed network (SPEC §3's fixed mode), as in the seed.

Ranking (documented choice): a neuron's fragility is the accuracy drop its removal causes, base − accuracy, on the
clean inputs by default (`by="adversarial"` ranks by the drop on the FGSM inputs). Rank 0 is the most fragile. Its
label follows `scores.characterize` on the accuracy change: Fr (drop > τ), Ro (``|change| ≤ τ``), Af (accuracy rises).
Where the attack hits: per neuron, the mean ``|a(x_ε) − a(x)|`` of its output a over examples and positions, the
attack's effect on that neuron; `rank_neurons` gives its Spearman correlation with the fragility.

Defense rule (documented choice): with q ∈ [0, 1] a neuron's position in the fragility order (0 the most robust,
1 the most fragile; ties share their mean position), its output is scaled by g = c + (a − c)·q, from the compression
factor c < 1 for the most robust to the amplification factor a > 1 for the most fragile, proportionally to rank.
The scaling multiplies the channel's weights and bias by g in a copy of the network.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import xarray as xr
from scipy.stats import rankdata, spearmanr
from torch import nn
from tqdm.auto import tqdm

from .attacks import accuracy, fgsm
from .engine import INPUTS, base_correct, prepare
from .errors import FragilityError
from .provenance import provenance
from .scores import characterize

NETWORKS = ("original", "defended")
DEFENSE_INPUTS = ("clean", "adversarial", "fixed")


def nodal_dropout(model: nn.Module, x, y=None, *, epsilon="auto", layer: str | None = None, batch_size: int = 500,
                  device=None, progress: bool = True) -> xr.Dataset:
    """Accuracy of the network with each neuron of `layer` removed in turn, on clean and fixed FGSM inputs.

    `layer` defaults to the first Conv2d in forward order; any Conv2d or Linear may be named. `epsilon` is a number
    or "auto" (`search_epsilon`). Returns accuracy(neuron, input), base_accuracy(input), attack_effect(neuron) (mean
    ``|a(x_ε) − a(x)|``), activation(neuron) (mean ``|a(x)|``) and epsilon; attrs name the layer.
    """
    was_training = model.training
    try:
        stress = prepare(model, x, y, layers=layer, include_global=False, epsilon=epsilon, attack="fixed",
                         batch_size=batch_size, device=device, progress=progress)
        if layer is None:
            modules = dict(stress.model.named_modules())
            layer = next((n for n in stress.layers if isinstance(modules[n], nn.Conv2d)), None)
            if layer is None:
                raise FragilityError("the model has no Conv2d layer: name a Linear layer to drop its units.")
        module = stress.model.get_submodule(layer)
        base = base_correct(stress)
        effect, activation = _attack_effect(stress, module)
        params = {"weight": module.weight.detach()}
        if module.bias is not None:
            params["bias"] = module.bias.detach()
        correct = np.zeros((module.weight.shape[0], 2), dtype=np.int64)
        for c in tqdm(range(len(correct)), desc=f"nodal dropout {layer}", unit="neuron", disable=not progress):
            dropped = {f"{layer}.{k}": v.index_fill(0, torch.tensor([c], device=v.device), 0) for k, v in params.items()}
            for xb, yb, ab in stress.batches():
                with torch.no_grad():
                    logits = torch.func.functional_call(stress.model, dropped, (torch.cat([xb, ab]),))
                correct[c] += [int((out.argmax(1) == yb).sum()) for out in logits.split(len(yb))]
    finally:
        model.train(was_training)
    n = len(stress.y)
    ds = xr.Dataset(
        {
            "accuracy": (("neuron", "input"), correct / n),
            "base_accuracy": (("input",), base / n),
            "attack_effect": (("neuron",), effect),
            "activation": (("neuron",), activation),
            "epsilon": ((), stress.epsilon),
        },
        coords={"neuron": np.arange(len(correct)), "input": list(INPUTS)},
        attrs={"layer": layer, "n_test": n, **provenance()},
    )
    ds["accuracy"].attrs["long_name"] = "accuracy with the neuron removed (weights and bias zeroed)"
    ds["attack_effect"].attrs["long_name"] = "mean |a(x_ε) − a(x)| of the neuron's output"
    ds["activation"].attrs["long_name"] = "mean |a(x)| of the neuron's output on clean inputs"
    return ds


def _attack_effect(stress, module: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel of `module`: mean ``|a(x_ε) − a(x)|`` and mean ``|a(x)|`` over examples and positions."""
    outputs: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda m, i, o: outputs.append(o.detach()))
    change = activation = 0.0
    count = 0
    try:
        with torch.no_grad():
            for xb, _, ab in stress.batches():
                outputs.clear()
                stress.model(torch.cat([xb, ab]))
                for out in outputs:  # every call of the module (once, unless it is shared)
                    clean, adversarial = out.float().split(len(xb))
                    dims = [d for d in range(out.dim()) if d != 1]
                    change = change + (adversarial - clean).abs().sum(dims)
                    activation = activation + clean.abs().sum(dims)
                    count += clean.numel() // clean.shape[1]
    finally:
        hook.remove()
    return (change / count).cpu().numpy(), (activation / count).cpu().numpy()


def rank_neurons(ds: xr.Dataset, by: str = "clean", tol: float = 0.02) -> xr.Dataset:
    """Fragility per neuron from a `nodal_dropout` Dataset (see the module docstring for the definitions).

    Returns change(neuron, input) = accuracy − base, fragility(neuron) = the drop on input `by`, rank(neuron)
    (0 = most fragile), label(neuron) (Fr/Ro/Af at tolerance tol) and correlation, the Spearman correlation of
    fragility with attack_effect (NaN when either is constant).
    """
    if by not in INPUTS:
        raise FragilityError(f"unknown input {by!r} to rank by: choose from {', '.join(INPUTS)}.")
    change = ds["accuracy"] - ds["base_accuracy"]
    fragility = -change.sel(input=by, drop=True)
    rank = xr.apply_ufunc(lambda f: rankdata(-f, method="ordinal", axis=-1) - 1, fragility,
                          input_core_dims=[["neuron"]], output_core_dims=[["neuron"]])

    def spearman(a, b):
        return np.nan if np.ptp(a) == 0 or np.ptp(b) == 0 else spearmanr(a, b).statistic

    correlation = xr.apply_ufunc(spearman, fragility, ds["attack_effect"], input_core_dims=[["neuron"], ["neuron"]],
                                 vectorize=True)
    out = xr.Dataset({"change": change, "fragility": fragility, "rank": rank,
                      "label": characterize(change.sel(input=by, drop=True), tol), "correlation": correlation})
    out.attrs.update(by=by, tol=tol, layer=ds.attrs.get("layer", ""))
    return out


def defense_factors(fragility: xr.DataArray, compress: float = 0.5, amplify: float = 1.5) -> xr.DataArray:
    """Scale factor per neuron, g = c + (a − c)·q with q the neuron's position in the fragility order (0 most robust)."""
    if fragility.dims != ("neuron",):
        raise FragilityError(f"fragility must have the single dimension 'neuron', got {fragility.dims}.")
    if not (np.isfinite(compress) and np.isfinite(amplify) and 0 < compress <= 1 <= amplify):
        raise FragilityError(f"need 0 < compress ≤ 1 ≤ amplify, got compress={compress!r}, amplify={amplify!r}.")
    q = (rankdata(fragility.values, method="average") - 1) / max(fragility.size - 1, 1)
    return xr.DataArray(compress + (amplify - compress) * q, coords=fragility.coords, dims="neuron", name="factor")


def scale_channels(model: nn.Module, layer: str, factors) -> nn.Module:
    """A copy of `model` whose `layer` (Conv2d or Linear) has output channel c's weights and bias multiplied by factors[c]."""
    modules = dict(model.named_modules())
    if not isinstance(modules.get(layer), (nn.Conv2d, nn.Linear)):
        known = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))]
        raise FragilityError(f"unknown layer {layer!r}: name a Conv2d or Linear layer ({', '.join(known)}).")
    scaled = copy.deepcopy(model)
    module = scaled.get_submodule(layer)
    f = torch.as_tensor(np.asarray(factors, dtype=float), dtype=module.weight.dtype, device=module.weight.device)
    if f.shape != module.weight.shape[:1] or not torch.isfinite(f).all():
        raise FragilityError(f"need {module.weight.shape[0]} finite factors for the channels of {layer!r}, "
                             f"got shape {tuple(f.shape)}.")
    with torch.no_grad():
        module.weight.mul_(f.view(-1, *[1] * (module.weight.dim() - 1)))
        if module.bias is not None:
            module.bias.mul_(f)
    return scaled


def defend(model: nn.Module, x, y, dropout_ds: xr.Dataset, *, by: str = "clean", compress: float = 0.5,
           amplify: float = 1.5, batch_size: int = 500, device=None) -> xr.Dataset:
    """The compress/amplify defense on the layer of `dropout_ds`, at its ε: accuracy before and after.

    Returns accuracy(network ∈ {original, defended}, input ∈ {clean, adversarial, fixed}) — adversarial: FGSM crafted
    against that network; fixed: FGSM crafted against the original — and factor(neuron). `model` is not modified.
    """
    if "layer" not in dropout_ds.attrs or "epsilon" not in dropout_ds:
        raise FragilityError("dropout_ds must be a Dataset returned by nodal_dropout (its layer and ε are needed).")
    layer, epsilon = dropout_ds.attrs["layer"], float(dropout_ds["epsilon"])
    ranking = rank_neurons(dropout_ds, by)
    factors = defense_factors(ranking["fragility"], compress, amplify)
    was_training = model.training
    try:
        stress = prepare(model, x, y, layers=layer, include_global=False, epsilon=epsilon, attack="fixed",
                         batch_size=batch_size, device=device, progress=False)
        defended = scale_channels(stress.model, layer, factors.values).eval()
        values = [[accuracy(net, inputs, stress.y, batch_size)
                   for inputs in (stress.x, fgsm(net, stress.x, stress.y, epsilon, batch_size=batch_size), stress.x_adv)]
                  for net in (stress.model, defended)]
    finally:
        model.train(was_training)
    ds = xr.Dataset(
        {"accuracy": (("network", "input"), np.array(values)), "factor": factors,
         "fragility": ranking["fragility"], "epsilon": ((), epsilon)},
        coords={"network": list(NETWORKS), "input": list(DEFENSE_INPUTS)},
        attrs={"layer": layer, "by": by, "compress": compress, "amplify": amplify, "n_test": len(stress.y),
               **provenance()},
    )
    ds["accuracy"].attrs["long_name"] = "accuracy before (original) and after (defended) the compress/amplify defense"
    return ds
