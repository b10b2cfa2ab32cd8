"""The sweep engine: every layer × filter × threshold, on clean and adversarial inputs, into one xarray Dataset (SPEC §5).

Speed comes from cutting the model's FX graph at the filtered layer: the part that does not depend on the layer
runs once per batch and its values are reused for every mask; only the layer and what depends on it (residual
branches included) is recomputed. Masks that leave the layer unchanged, or repeat an earlier mask, are not evaluated
again. `fragility.naive` keeps the plain per-threshold loop as the oracle this engine is tested against.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import copy
import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from .attacks import fgsm, search_epsilon
from .errors import FragilityError
from .filters import FILTERS, check_filter, check_intervals, check_weights, keep_mask, thresholds
from .provenance import provenance

ATTACKS = ("fixed", "adaptive")
PRECISIONS = ("float32", "bfloat16")
INPUTS = ("clean", "adversarial")


def as_tensors(x, y=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensors x, y from tensors or from any iterable of (x, y) batches such as a DataLoader."""
    if isinstance(x, torch.Tensor):
        if y is None:
            raise FragilityError("labels y are missing: pass y with a tensor x, or pass a DataLoader of (x, y).")
        return x, torch.as_tensor(y)
    try:
        xs, ys = zip(*((b[0], b[1]) for b in x))
    except (TypeError, IndexError, ValueError) as err:
        raise FragilityError(f"x must be a tensor or an iterable of (x, y) batches such as a DataLoader ({err}).") from None
    return torch.cat(xs), torch.cat([torch.as_tensor(b) for b in ys])


def filterable_layers(model: nn.Module, sample: torch.Tensor) -> list[str]:
    """Names of the Conv2d and Linear modules in the order the forward pass first calls them (SPEC §1)."""
    modules = {m: name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    if not modules:
        raise FragilityError("the model has no Conv2d or Linear layer: there are no weights to filter.")
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(modules[mod])) for m in modules]
    try:
        with torch.no_grad():
            out = model(sample)
    except Exception as err:  # the model's own complaint about the input, reported in one line
        raise FragilityError(f"the model rejects inputs of shape {tuple(sample.shape[1:])}: {err}".splitlines()[0]) from None
    finally:
        for h in hooks:
            h.remove()
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise FragilityError("the model must return class scores of shape (batch, classes).")
    return list(dict.fromkeys(order))


def forward_with_weight(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The layer's forward with `weight` in place of its own."""
    if isinstance(module, nn.Conv2d):
        return module._conv_forward(x, weight, module.bias)
    return F.linear(x, weight, module.bias)


@dataclass(eq=False)
class Stress:
    """One validated sweep: the model, its test inputs, the layers, filters, thresholds and ε."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    layers: list[str]
    include_global: bool
    filters: tuple[str, ...]
    A: int
    attack: str
    ratio: float
    batch_size: int
    precision: str
    progress: bool
    epsilon: float = 0.0
    x_adv: torch.Tensor | None = None
    weights: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def units(self) -> list[str]:
        return self.layers + (["global"] if self.include_global else [])

    @functools.cached_property
    def _theta64(self) -> dict[str, torch.Tensor]:
        return {n: w.to(torch.float64) for n, w in self.weights.items()}

    @functools.cache
    def range(self, unit: str) -> tuple[float, float]:
        """(lo, hi) of θ: the layer's own, or over every filterable weight for `global`."""
        thetas = self.weights.values() if unit == "global" else [self.weights[unit]]
        return min(float(t.min()) for t in thetas), max(float(t.max()) for t in thetas)

    def members(self, unit: str) -> list[str]:
        return list(self.weights) if unit == "global" else [unit]

    def masks(self, unit: str, kind: str, i: int) -> dict[str, torch.Tensor]:
        """Keep-masks of every layer of `unit` for filter `kind` at index i (one shared grid for `global`)."""
        lo, hi = self.range(unit)
        return {n: keep_mask(self._theta64[n], kind, i, self.A, lo, hi) for n in self.members(unit)}

    def n_params(self, unit: str) -> int:
        return sum(self.weights[n].numel() for n in self.members(unit))

    def autocast(self):
        """bfloat16 autocast when asked for, else nothing."""
        if self.precision == "bfloat16":
            return torch.autocast(self.x.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def batches(self):
        return zip(self.x.split(self.batch_size), self.y.split(self.batch_size),
                   self.x_adv.split(self.batch_size) if self.x_adv is not None else [None] * len(self.x))


def prepare(model: nn.Module, x, y=None, *, A: int = 25, filters=FILTERS, layers=None, include_global: bool = True,
            epsilon="auto", attack: str = "fixed", ratio: float = 0.5, batch_size: int = 500, device=None,
            precision: str = "float32", progress: bool = True) -> Stress:
    """Validate every argument of a sweep and compute what all units share (ε, fixed adversarial inputs)."""
    check_intervals(A)
    filters = tuple(filters)
    if not filters:
        raise FragilityError("filters is empty: pass some of h1, h2, h3.")
    for kind in filters:
        check_filter(kind)
    if attack not in ATTACKS:
        raise FragilityError(f"unknown attack mode {attack!r}: choose 'fixed' (the paper) or 'adaptive' (the authors' code).")
    if precision not in PRECISIONS:
        raise FragilityError(f"unknown precision {precision!r}: choose from {', '.join(PRECISIONS)}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise FragilityError(f"batch_size must be a whole number ≥ 1, got {batch_size!r}.")
    x, y = as_tensors(x, y)
    if len(x) == 0 or len(x) != len(y):
        raise FragilityError(f"x and y must hold the same, non-zero number of examples (got {len(x)} and {len(y)}).")
    if y.dtype.is_floating_point or y.dim() != 1:
        raise FragilityError("y must be a 1-D tensor of integer class labels.")
    params = list(model.parameters())
    target = torch.device(device) if device is not None else (params[0].device if params else torch.device("cpu"))
    if params and params[0].device != target:
        model = copy.deepcopy(model).to(target)
    model.eval()
    x, y = x.to(target, torch.float32), y.to(target, torch.long)
    found = filterable_layers(model, x[:2])
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    if int(y.min()) < 0 or int(y.max()) >= classes:
        raise FragilityError(f"labels must lie in 0..{classes - 1} for this {classes}-class model, "
                             f"got {int(y.min())}..{int(y.max())}.")
    if layers is None:
        layers = found
    else:
        layers = [layers] if isinstance(layers, str) else list(layers)
        unknown = [n for n in layers if n not in found]
        if unknown:
            raise FragilityError(f"unknown layer(s) {', '.join(map(repr, unknown))}: the filterable layers are "
                                 f"{', '.join(found)}.")
        layers = [n for n in found if n in layers]
    modules = dict(model.named_modules())
    weights = {n: modules[n].weight.detach() for n in found}
    for n in found if include_global else layers:
        check_weights(weights[n], f"the weights of layer {n!r}")
    stress = Stress(model, x, y, layers, include_global, filters, A, attack, ratio, batch_size, precision, progress,
                    weights={n: weights[n] for n in (found if include_global else layers)})
    if isinstance(epsilon, str):
        if epsilon != "auto":
            raise FragilityError(f"epsilon must be a number ≥ 0 or 'auto', got {epsilon!r}.")
        stress.epsilon = search_epsilon(model, x, y, ratio=ratio, batch_size=batch_size)
    elif not (isinstance(epsilon, (int, float)) and np.isfinite(epsilon) and epsilon >= 0):
        raise FragilityError(f"epsilon must be a number ≥ 0 or 'auto', got {epsilon!r}.")
    else:
        stress.epsilon = float(epsilon)
    if attack == "fixed":
        stress.x_adv = fgsm(model, x, y, stress.epsilon, batch_size=batch_size)
    return stress


def channels_last(stress: Stress) -> Stress:
    """The sweep on a channels-last copy of the network: the same weights, about twice as fast on CPU convolutions.

    Only for the fixed attack, whose adversarial inputs are already made (an adaptive attack's gradient signs would
    depend on the layout's rounding); a model without 4-D inputs is left as it is.
    """
    if stress.attack != "fixed" or stress.x.dim() != 4:
        return stress
    layout = torch.channels_last
    model = copy.deepcopy(stress.model).to(memory_format=layout)
    modules = dict(model.named_modules())
    return dataclasses.replace(stress, model=model, x=stress.x.contiguous(memory_format=layout),
                               x_adv=stress.x_adv.contiguous(memory_format=layout),
                               weights={n: modules[n].weight.detach() for n in stress.weights})


def base_correct(stress: Stress) -> np.ndarray:
    """Correct counts of the unperturbed network on clean and adversarial inputs (adversary: f(x, θ))."""
    x_adv = stress.x_adv if stress.x_adv is not None else fgsm(stress.model, stress.x, stress.y, stress.epsilon,
                                                              batch_size=stress.batch_size)
    with torch.no_grad(), stress.autocast():
        return np.array([sum(int((stress.model(xb).argmax(1) == yb).sum())
                             for xb, yb in zip(inp.split(stress.batch_size), stress.y.split(stress.batch_size)))
                         for inp in (stress.x, x_adv)])


def to_dataset(stress: Stress, correct: np.ndarray, n_filtered: np.ndarray, base: np.ndarray, engine: str) -> xr.Dataset:
    """The SPEC §5 Dataset from correct and filtered counts of shape (unit, filter, alpha[, input])."""
    units, A, n = stress.units, stress.A, len(stress.y)
    thr = np.array([[thresholds(kind, A, *stress.range(unit)).numpy() for kind in stress.filters] for unit in units])
    coords = {"layer": units, "filter": list(stress.filters), "alpha": np.arange(A + 1) / A, "input": list(INPUTS)}
    ds = xr.Dataset(
        {
            "accuracy": (("layer", "filter", "alpha", "input"), correct / n),
            "n_filtered": (("layer", "filter", "alpha"), n_filtered),
            "n_params": (("layer",), np.array([stress.n_params(u) for u in units], dtype=np.int64)),
            "threshold": (("layer", "filter", "alpha"), thr),
            "base_accuracy": (("input",), base / n),
            "epsilon": ((), stress.epsilon),
        },
        coords=coords,
        attrs={"A": A, "attack": stress.attack, "ratio": stress.ratio, "n_test": n, "precision": stress.precision,
               "engine": engine, **provenance()},
    )
    ds["accuracy"].attrs["long_name"] = "accuracy β of the filtered network"
    ds["epsilon"].attrs["long_name"] = "FGSM magnitude ε (normalized input units)"
    return ds


class _Graph(fx.Interpreter):
    """The traced model, run node by node, with chosen layers' weights replaced."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=False)
        self.nodes = list(gm.graph.nodes)
        self.override: dict[str, torch.Tensor] = {}

    def call_module(self, target, args, kwargs):
        if target in self.override:
            return forward_with_weight(self.submodules[target], args[0], self.override[target])
        return super().call_module(target, args, kwargs)

    def cut(self, layer: str) -> tuple[list[fx.Node], list[fx.Node], list[fx.Node]] | None:
        """(upstream nodes, frontier, downstream nodes) of `layer`, or None when the graph never calls it."""
        calls = {n for n in self.nodes if n.op == "call_module" and n.target == layer}
        if not calls:
            return None
        down = set(calls)
        for n in self.nodes:
            if n.op == "output" or any(a in down for a in n.all_input_nodes):
                down.add(n)
        frontier = list(dict.fromkeys(a for n in self.nodes if n in down for a in n.all_input_nodes if a not in down))
        need = set(frontier)
        for n in reversed(self.nodes):
            if n in need:
                need.update(n.all_input_nodes)
        return ([n for n in self.nodes if n in need and n.op != "placeholder"], frontier,
                [n for n in self.nodes if n in down])

    def evaluate(self, nodes: list[fx.Node], env: dict) -> object:
        """Run `nodes` in order over `env` (node → value) and return the last one's value."""
        self.env = env
        for n in nodes:
            env[n] = self.run_node(n)
        return env[nodes[-1]] if nodes else None


def _trace(model: nn.Module) -> _Graph | None:
    try:
        return _Graph(fx.symbolic_trace(model))
    except Exception as err:  # any tracing failure means: sweep the plain way
        warnings.warn(f"the model cannot be traced ({type(err).__name__}); every mask runs the whole network, "
                      "which is correct but slower.", stacklevel=3)
        return None


def _correct(logits: torch.Tensor, y: torch.Tensor) -> int:
    return int((logits.argmax(1) == y).sum())


class _Counts:
    """Correct counts per mask, each distinct mask evaluated once; a mask that keeps every weight is the base."""

    def __init__(self, stress: Stress, unit: str, base: np.ndarray):
        self.stress, self.unit = stress, unit
        self.groups: list[tuple[str, int, list[tuple[int, int]]]] = []  # (filter, i) evaluated → (f, i) it stands for
        self.result = np.zeros((len(stress.filters), stress.A + 1, 2), dtype=np.int64)
        self.n_filtered = np.zeros((len(stress.filters), stress.A + 1), dtype=np.int64)
        seen: dict[bytes, int] = {}
        for f, kind in enumerate(stress.filters):
            for i in range(stress.A + 1):
                masks = stress.masks(unit, kind, i)
                self.n_filtered[f, i] = sum(int((~m).sum()) for m in masks.values())
                if self.n_filtered[f, i] == 0:
                    self.result[f, i] = base
                    continue
                digest = hashlib.blake2b(digest_size=32)
                for m in masks.values():
                    digest.update(np.packbits(m.cpu().numpy()).tobytes())
                key = digest.digest()
                if key not in seen:
                    seen[key] = len(self.groups)
                    self.groups.append((kind, i, []))
                self.groups[seen[key]][2].append((f, i))

    def weight_sets(self) -> list:
        """One callable per distinct mask, giving its filtered weights when called."""
        return [functools.partial(self.weights, k) for k in range(len(self.groups))]

    def weights(self, k: int) -> dict[str, torch.Tensor]:
        """Filtered weights θ̃ = B ⊙ θ (Eq. 1) of every layer of the unit for distinct mask k."""
        kind, i, _ = self.groups[k]
        return {n: self.stress.weights[n] * m.to(self.stress.weights[n].device)
                for n, m in self.stress.masks(self.unit, kind, i).items()}

    def add(self, k: int, clean: int, adversarial: int) -> None:
        for f, i in self.groups[k][2]:
            self.result[f, i] += (clean, adversarial)


def count_correct(stress: Stress, graph: _Graph | None, unit: str, weight_sets: list, bar=None,
                  clean_only: bool = False) -> np.ndarray:
    """Correct counts (len(weight_sets), inputs) with the unit's weights replaced by each weight_sets[k]() in turn.

    Through the graph cut when there is one (upstream once per batch, the layer and its dependants per weight set),
    else the whole network per weight set. Inputs are clean and adversarial (fixed: `stress.x_adv`; adaptive:
    FGSM against each filtered network), or clean only.
    """
    cut = graph.cut(unit) if graph is not None and unit != "global" else None
    correct = np.zeros((len(weight_sets), 1 if clean_only else 2), dtype=np.int64)
    placeholder = next(n for n in graph.nodes if n.op == "placeholder") if cut is not None else None
    up, frontier, down = cut if cut is not None else ([], [], [])

    def run(weights, inputs):
        """Logits of the network with `weights` on `inputs`, reusing the cached upstream values when given."""
        if cut is None:
            return torch.func.functional_call(stress.model, {f"{n}.weight": w for n, w in weights.items()}, (inputs,))
        graph.override = weights
        if isinstance(inputs, list):
            return graph.evaluate(down, dict(zip(frontier, _fresh(inputs))))
        env = {placeholder: inputs}
        graph.evaluate(up, env)
        return graph.evaluate(down, env)

    def upstream(inputs):
        if cut is None:
            return inputs
        env = {placeholder: inputs}
        graph.evaluate(up, env)
        return [env[n] for n in frontier]

    try:
        for xb, yb, ab in stress.batches():
            n = len(yb)
            if clean_only or stress.attack == "fixed":
                with torch.no_grad(), stress.autocast():
                    cached = upstream(xb if clean_only else torch.cat([xb, ab]))
                    for k, weights in enumerate(weight_sets):
                        logits = run(weights(), cached)
                        correct[k] += [_correct(part, yb) for part in logits.split(n)]
                        if bar is not None:
                            bar.update(1)
                continue
            xg = xb.detach().requires_grad_(True)
            with torch.enable_grad(), stress.autocast():
                cached = upstream(xg)
            for k, weights in enumerate(weight_sets):
                w = weights()
                with torch.enable_grad(), stress.autocast():
                    logits = run(w, cached)
                    loss = F.cross_entropy(logits.float(), yb, reduction="sum")
                (grad,) = torch.autograd.grad(loss, xg, retain_graph=cut is not None)
                with torch.no_grad(), stress.autocast():
                    adv = run(w, xb + stress.epsilon * grad.sign())
                correct[k] += (_correct(logits.detach(), yb), _correct(adv, yb))
                if bar is not None:
                    bar.update(1)
    finally:
        if graph is not None:
            graph.override = {}
    return correct


def _fresh(values: list) -> list:
    """Copies of cached tensors, so that in-place operations downstream never touch the cache."""
    return [v.clone() if isinstance(v, torch.Tensor) else v for v in values]


def sweep(model: nn.Module, x, y=None, *, A: int = 25, filters=FILTERS, layers=None, include_global: bool = True,
          epsilon="auto", attack: str = "fixed", ratio: float = 0.5, batch_size: int = 500, device=None,
          precision: str = "float32", progress: bool = True) -> xr.Dataset:
    """Accuracy of the network under every synaptic filter, threshold and layer, clean and adversarial (SPEC §4–5).

    `layers=None` filters every Conv2d/Linear layer, each on its own (local analysis), then all at once (`global`).
    `epsilon="auto"` searches ε with `search_epsilon` (ratio ρ). `attack="fixed"` crafts x_ε once against the
    unfiltered network (the paper); `"adaptive"` crafts it against each filtered network (the authors' code).
    `precision="bfloat16"` runs the forward work under bfloat16 autocast (faster, not bit-exact).
    Returns accuracy(layer, filter, alpha, input), n_filtered, n_params, threshold, base_accuracy and epsilon.
    """
    was_training = model.training
    try:
        stress = channels_last(prepare(model, x, y, A=A, filters=filters, layers=layers, include_global=include_global,
                                       epsilon=epsilon, attack=attack, ratio=ratio, batch_size=batch_size,
                                       device=device, precision=precision, progress=progress))
        base = base_correct(stress)
        graph = _trace(stress.model) if stress.layers else None
        n_batches = len(stress.y[::stress.batch_size])
        correct, n_filtered = [], []
        for unit in tqdm(stress.units, desc="sweep", unit="layer", disable=not progress):
            counts = _Counts(stress, unit, base)
            with tqdm(total=len(counts.groups) * n_batches, desc=unit, unit="mask·batch", leave=False,
                      disable=not progress) as bar:
                found = count_correct(stress, graph, unit, counts.weight_sets(), bar)
            for k, (clean, adversarial) in enumerate(found):
                counts.add(k, clean, adversarial)
            correct.append(counts.result)
            n_filtered.append(counts.n_filtered)
        return to_dataset(stress, np.stack(correct), np.stack(n_filtered), base,
                          "graph" if graph is not None else "plain")
    finally:
        model.train(was_training)
