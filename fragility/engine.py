"""The sweep engine: every layer × filter × threshold, on clean and adversarial inputs, into one xarray Dataset.

Speed comes from cutting the model's FX graph at the filtered layer: the part that does not depend on the layer
runs once per batch and its values are reused for every mask; only the layer and what depends on it (residual
branches included) is recomputed, for K masks in one pass (`fragility.passes`). Masks that leave the layer
unchanged, or repeat an earlier mask, are not evaluated again. `fragility.naive` keeps the plain per-threshold loop
as the oracle this engine is tested against.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import copy
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from . import checks
from .attacks import fgsm, search_epsilon
from .errors import FragilityError
from .filters import FILTERS, check_intervals, check_weights, keep_mask, thresholds
from .passes import _trace, count_correct, evaluate, resolve  # noqa: F401 (the studies import count_correct here)
from .preserve import preserved
from .provenance import provenance

ATTACKS = ("fixed", "adaptive")
PRECISIONS = ("float32", "tf32", "bfloat16")
INPUTS = ("clean", "adversarial")
BATCHNORM = ("running", "batch")
_BN = nn.modules.batchnorm._BatchNorm


def filterable_layers(model: nn.Module, sample: torch.Tensor) -> list[str]:
    """Names of the Conv2d and Linear modules in the order the forward pass first calls them."""
    modules = {m: name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    if not modules:
        raise FragilityError("the model has no Conv2d or Linear layer: there are no weights to filter.")
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(modules[mod])) for m in modules]
    try:
        with torch.no_grad():
            out = model(sample)
    except Exception as err:  # the model's own complaint about the input, reported in one line
        raise FragilityError(f"the model rejects inputs of shape {tuple(sample.shape[1:])}: {err}"
                             .splitlines()[0]) from None
    finally:
        for h in hooks:
            h.remove()
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise FragilityError("the model must return class scores of shape (batch, classes).")
    return list(dict.fromkeys(order))


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
    masks_per_pass: int | str = "auto"
    batchnorm: str = "running"
    classes: int = 0
    image: np.ndarray | None = None  # the test images' indices (a coordinate of the per-image results)
    _ranges: dict = field(default_factory=dict)

    @property
    def units(self) -> list[str]:
        return self.layers + (["global"] if self.include_global else [])

    @functools.cached_property
    def _theta64(self) -> dict[str, torch.Tensor]:
        return {n: w.to(torch.float64) for n, w in self.weights.items()}

    def range(self, unit: str) -> tuple[float, float]:
        """(lo, hi) of θ: the layer's own, or over every filterable weight for `global`."""
        if unit not in self._ranges:
            thetas = self.weights.values() if unit == "global" else [self.weights[unit]]
            self._ranges[unit] = min(float(t.min()) for t in thetas), max(float(t.max()) for t in thetas)
        return self._ranges[unit]

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

    @property
    def chance(self) -> float:
        """Chance accuracy c = max(1/K, the share of the most frequent label): the above-chance scaling's zero."""
        share = float(torch.bincount(self.y.cpu(), minlength=self.classes).max()) / len(self.y)
        return max(1 / self.classes, share)

    def batches(self):
        return zip(self.x.split(self.batch_size), self.y.split(self.batch_size),
                   self.x_adv.split(self.batch_size) if self.x_adv is not None else [None] * len(self.x))


def tf32_flags() -> list[tuple[object, str]]:
    """The CUDA matmul and cuDNN convolution TF32 flags as (owner, attribute): torch ≥ 2.9's fp32_precision ones
    (beside which setting the legacy ones fails), else allow_tf32."""
    if hasattr(torch.backends.cudnn, "conv"):
        return [(torch.backends.cuda.matmul, "fp32_precision"), (torch.backends.cudnn.conv, "fp32_precision")]
    return [(torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")]


@contextlib.contextmanager
def batchnorm_statistics(model: nn.Module, reading: str = "running"):
    """BatchNorm while inside: "running" (the model's running statistics in eval mode, the default) changes nothing;
    "batch" makes every BatchNorm normalize each batch it sees by that batch's own statistics whatever the module's
    mode, as a network left in training mode does (the authors' filtering notebook never calls eval()), and leaves
    its running statistics exactly as they were (they are set aside, not updated, and put back on exit)."""
    checks.require(reading, checks.one_of(BATCHNORM), "batchnorm")
    stash = [(m, m.running_mean, m.running_var) for m in model.modules()
             if reading == "batch" and isinstance(m, _BN) and m.running_mean is not None]
    for m, _, _ in stash:
        m.running_mean, m.running_var = None, None  # without them BatchNorm uses the batch's statistics
    try:
        yield model
    finally:
        for m, mean, var in stash:
            m.running_mean, m.running_var = mean, var


@contextlib.contextmanager
def tf32(on: bool):
    """TF32 on or off for CUDA matmuls and cuDNN convolutions while inside; the caller's flags are restored after."""
    flags = tf32_flags()
    before = [getattr(owner, name) for owner, name in flags]
    for owner, name in flags:
        setattr(owner, name, on if name == "allow_tf32" else "tf32" if on else "ieee")
    try:
        yield
    finally:
        for (owner, name), value in zip(flags, before):
            setattr(owner, name, value)


def prepare(model: nn.Module, x, y=None, *, A: int = 25, filters=FILTERS, layers=None, include_global: bool = True,
            epsilon="auto", attack: str = "fixed", ratio: float = 0.5, batch_size: int = 500, device=None,
            precision: str = "float32", progress: bool = True, masks_per_pass="auto", batchnorm: str = "running",
            image=None) -> Stress:
    """Validate every argument of a sweep and compute what all units share (ε, fixed adversarial inputs).

    The caller's model is not moved: a model on another device than `device` is copied there. Under
    `batchnorm="batch"` call it inside `batchnorm_statistics(model, "batch")`, so that the ε search and the fixed
    adversarial inputs see the same network as the sweep.
    """
    A = check_intervals(A)
    filters = checks.names(filters, "filters", FILTERS)
    attack = checks.require(attack, checks.Rule(lambda v: v in ATTACKS, "'fixed' (the paper) or 'adaptive' (the "
                                                                        "authors' code)"), "attack")
    precision = checks.require(precision, checks.one_of(PRECISIONS), "precision")
    batchnorm = checks.require(batchnorm, checks.one_of(BATCHNORM), "batchnorm")
    batch_size = checks.count(batch_size, "batch_size")
    ratio = checks.number(ratio, "ratio", 0, 1, open_low=True, open_high=True)
    if not (isinstance(masks_per_pass, str) and masks_per_pass == "auto"):
        masks_per_pass = int(checks.require(masks_per_pass, checks.Rule(
            lambda v: checks.is_whole(v) and v >= 1, "a whole number ≥ 1, or 'auto'"), "masks_per_pass"))
    if not (isinstance(epsilon, str) and epsilon == "auto"):
        epsilon = float(checks.require(epsilon, checks.real(0, what="a finite number ≥ 0, or 'auto'"), "epsilon"))
    if not isinstance(model, nn.Module):
        raise FragilityError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    x, y = checks.examples(x, y)
    if batchnorm == "batch" and len(y) % batch_size == 1 and any(isinstance(m, _BN) for m in model.modules()):
        raise FragilityError(f"batchnorm='batch' normalizes each batch by its own statistics, and the last batch of "
                             f"{len(y)} examples in batches of {batch_size} holds one example: choose another "
                             "batch_size or number of examples.")
    image = np.arange(len(y)) if image is None else np.asarray(image)
    if image.shape != (len(y),):
        raise FragilityError(f"image must give one index per example ({len(y)}); got shape {image.shape}.")
    target = checks.device(device) if device is not None else None
    params = list(model.parameters())
    if not params:
        raise FragilityError("the model has no Conv2d or Linear layer (no parameters at all): there are no weights "
                             "to filter.")
    target = target or params[0].device
    if params[0].device != target:
        model = copy.deepcopy(model).to(target)
    model.eval()
    x, y = x.to(target, params[0].dtype), y.to(target)  # a float64 model gets float64 inputs
    found = filterable_layers(model, x[:2])
    with torch.no_grad():
        classes = model(x[:2]).shape[1]  # two examples: batch statistics need more than one
    if int(y.min()) < 0 or int(y.max()) >= classes:
        raise FragilityError(f"labels must lie in 0..{classes - 1} for this {classes}-class model, "
                             f"got {int(y.min())}..{int(y.max())}.")
    if layers is None:
        layers = found
    else:
        layers = [layers] if isinstance(layers, str) else layers
        if not isinstance(layers, (list, tuple)) or not all(isinstance(n, str) for n in layers) \
                or len(set(layers)) != len(layers):
            raise FragilityError(f"layers must be None (every layer), a layer name or a list of distinct layer names "
                                 f"(possibly empty: the global unit only); got {layers!r}.")
        if not layers and not include_global:
            raise FragilityError("nothing to sweep: layers is empty and include_global is False.")
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
                    weights={n: weights[n] for n in (found if include_global else layers)},
                    masks_per_pass=masks_per_pass, batchnorm=batchnorm, classes=int(classes), image=image)
    stress.epsilon = search_epsilon(model, x, y, ratio=ratio, batch_size=batch_size) if epsilon == "auto" \
        else epsilon
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
    """Which examples the unperturbed network classifies correctly, clean and adversarial (adversary: f(x, θ)):
    booleans (input, example)."""
    x_adv = stress.x_adv if stress.x_adv is not None else fgsm(stress.model, stress.x, stress.y, stress.epsilon,
                                                              batch_size=stress.batch_size)
    with torch.no_grad(), stress.autocast():
        return np.stack([torch.cat([stress.model(xb).argmax(1) == yb for xb, yb in
                                    zip(inp.split(stress.batch_size), stress.y.split(stress.batch_size))]).cpu().numpy()
                         for inp in (stress.x, x_adv)])


def to_dataset(stress: Stress, correct: np.ndarray, n_filtered: np.ndarray, base: np.ndarray,
               engine: str) -> xr.Dataset:
    """The sweep's Dataset from which examples are classified correctly, booleans (unit, filter, alpha, input,
    example) and, unperturbed, (input, example), and the filtered counts (unit, filter, alpha)."""
    units, A, n = stress.units, stress.A, len(stress.y)
    thr = np.array([[thresholds(kind, A, *stress.range(unit)).numpy() for kind in stress.filters] for unit in units])
    coords = {"layer": units, "filter": list(stress.filters), "alpha": np.arange(A + 1) / A, "input": list(INPUTS),
              "image": stress.image}
    ds = xr.Dataset(
        {
            "accuracy": (("layer", "filter", "alpha", "input"), correct.sum(-1) / n),
            "n_filtered": (("layer", "filter", "alpha"), n_filtered),
            "n_params": (("layer",), np.array([stress.n_params(u) for u in units], dtype=np.int64)),
            "threshold": (("layer", "filter", "alpha"), thr),
            "base_accuracy": (("input",), base.sum(-1) / n),
            "epsilon": ((), stress.epsilon),
            "chance": ((), stress.chance),
            "correct": (("layer", "filter", "alpha", "input", "image"), correct),
            "base_correct": (("input", "image"), base),
        },
        coords=coords,
        attrs={"A": A, "attack": stress.attack, "ratio": stress.ratio, "n_test": n, "precision": stress.precision,
               "masks_per_pass": stress.masks_per_pass, "batchnorm": stress.batchnorm, "classes": stress.classes,
               "engine": engine, **provenance()},
    )
    ds["accuracy"].attrs["long_name"] = "accuracy β of the filtered network"
    ds["epsilon"].attrs["long_name"] = "FGSM magnitude ε (normalized input units)"
    ds["chance"].attrs["long_name"] = "chance accuracy max(1/K, share of the most frequent test label)"
    ds["correct"].attrs["long_name"] = "example classified correctly by the filtered network"
    ds["base_correct"].attrs["long_name"] = "example classified correctly by the unperturbed network"
    ds["image"].attrs["long_name"] = "index of the example in its test set"
    return ds


class _Counts:
    """Which examples each mask's network classifies correctly, each distinct mask evaluated once; a mask that keeps
    every weight is the base."""

    def __init__(self, stress: Stress, unit: str, base: np.ndarray):
        self.stress, self.unit = stress, unit
        self.groups: list[tuple[str, int, list[tuple[int, int]]]] = []  # (filter, i) evaluated → (f, i) it stands for
        self.result = np.zeros((len(stress.filters), stress.A + 1) + base.shape, dtype=bool)
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

    def add(self, k: int, hits: np.ndarray) -> None:
        """Distinct mask k's correct examples (input, example) for every (filter, i) it stands for."""
        for f, i in self.groups[k][2]:
            self.result[f, i] = hits


def sweep(model: nn.Module, x, y=None, *, A: int = 25, filters=FILTERS, layers=None, include_global: bool = True,
          epsilon="auto", attack: str = "fixed", ratio: float = 0.5, batch_size: int = 500, device=None,
          precision: str = "float32", progress: bool = True, masks_per_pass="auto", batchnorm: str = "running",
          image=None) -> xr.Dataset:
    """Accuracy of the network under every synaptic filter, threshold and layer, clean and adversarial (Eq. 7–12).

    Args:
        model: the trained network (evaluated in eval() mode; given back exactly as it was).
        x, y: test inputs and integer labels, or a DataLoader of (x, y) batches.
        A: threshold intervals (A + 1 thresholds α = i / A; the paper: 25).
        filters: some of "h1" (high-pass), "h2" (low-pass), "h3" (pulse wave).
        layers: None for every Conv2d/Linear layer, each on its own (local analysis), or some of their names.
        include_global: also filter every layer at once with one threshold grid (`global`, the global analysis).
        epsilon: the FGSM magnitude, or "auto" to search it (constraint 3, ratio ρ).
        attack: "fixed" crafts x_ε once against the unfiltered network (the paper); "adaptive" against each
            filtered network (the authors' code).
        ratio: ρ of the ε search.
        batch_size: examples per pass.
        device: where to compute (None: the model's device); the model is copied there, never moved.
        precision: "float32" (TF32 off on CUDA), "tf32" (TF32 allowed on CUDA) or "bfloat16" (autocast): the last
            two are faster and not bit-exact.
        progress: show progress bars.
        masks_per_pass: K masks of a unit evaluated in one batched pass (`fragility.passes`), or "auto": on CUDA as
            many as half the free GPU memory holds, on CPU 1 (batching measured no faster there).
        batchnorm: "running" (eval mode: BatchNorm uses its running statistics, the default) or "batch" (each
            evaluated batch — clean and adversarial apart — normalized by its own statistics, as a network left in
            training mode does; the running statistics stay as they were). One mask per pass under "batch".
        image: the examples' indices in their test set (default 0 … n − 1), the `image` coordinate.

    Returns:
        accuracy(layer, filter, alpha, input), n_filtered, n_params, threshold, base_accuracy(input), epsilon,
        chance (max(1/K, the share of the most frequent label)), and per example correct(layer, filter, alpha,
        input, image) and base_correct(input, image) (for intervals over test images); attributes record A, the
        attack, ρ, the test-set size, the precision, K, the BatchNorm reading and the provenance.

    Raises:
        FragilityError: any bad argument, non-finite inputs, labels out of range, NaN/Inf or all-zero weights, an
            unusable device — before anything is computed.

    Example:
        >>> ds = fr.sweep(model, x_test, y_test, A=25, epsilon="auto")
        >>> ds.accuracy.sel(layer="conv1", filter="h1", input="clean")
    """
    with preserved(model), batchnorm_statistics(model, batchnorm), tf32(precision == "tf32"):
        stress = channels_last(prepare(model, x, y, A=A, filters=filters, layers=layers,
                                       include_global=include_global, epsilon=epsilon, attack=attack, ratio=ratio,
                                       batch_size=batch_size, device=device, precision=precision,
                                       progress=progress, masks_per_pass=masks_per_pass, batchnorm=batchnorm,
                                       image=image))
        base = base_correct(stress)
        graph = _trace(stress.model)
        counts = {unit: _Counts(stress, unit, base) for unit in stress.units}
        probe = stress.units[-1] if include_global else stress.units[0]  # recomputes the most per mask
        stress.masks_per_pass = resolve(stress, graph, probe, counts[probe].weight_sets())
        n_batches = len(stress.y[::stress.batch_size])
        used = []
        for unit in tqdm(stress.units, desc="sweep", unit="layer", disable=not progress):
            with tqdm(total=len(counts[unit].groups) * n_batches, desc=unit, unit="mask·batch", leave=False,
                      disable=not progress) as bar:
                found, k = evaluate(stress, graph, unit, counts[unit].weight_sets(), bar)
            used.append(k)
            for j, hits in enumerate(found):
                counts[unit].add(j, hits)
        stress.masks_per_pass = min(used)
        return to_dataset(stress, np.stack([c.result for c in counts.values()]),
                          np.stack([c.n_filtered for c in counts.values()]), base,
                          "graph" if graph is not None else "plain")
