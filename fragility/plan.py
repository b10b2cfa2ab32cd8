"""A sweep's plan: every argument of a sweep validated, and what all its units share (the layers and their weights,
the stresses, the attack and its ε, the fixed adversarial inputs), before anything is computed.

Units are the local layers (each filterable layer on its own) and `global` (every filterable weight at once). Weights
are held per parameter: two layers that share one weight tensor (tied weights) are one parameter, counted once in
`global` (its n_params, threshold range and masks), and a tied layer's local unit means "this parameter": stressing
it changes both layers, since they are one tensor (as the oracle, which edits the tensor in a copy of the model,
does).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import checks
from .attacks import ATTACKS, Attack, as_attack, search_epsilon
from .errors import FragilityError
from .filters import FILTERS
from .layers import Layers, as_layers
from .metrics import Accuracy, Metric, as_metric
from .preserve import copy_inputs
from .stresses import Stress, Weights, as_stresses, check_intervals, check_weights

CRAFTED = ("fixed", "adaptive")  # when the adversarial inputs are crafted
PRECISIONS = ("float32", "tf32", "bfloat16")
INPUTS = ("clean", "adversarial")
BATCHNORM = ("running", "batch")
MEMORY_FORMATS = ("channels_last", "contiguous")  # the layout of a sweep's convolutions on CPU (engine.sweep)
_BN = nn.modules.batchnorm._BatchNorm


def filterable_layers(model: nn.Module, sample: torch.Tensor, selection: Layers | None = None) -> list[str]:
    """Names of the Conv2d and Linear modules (or of those `selection` takes, `fragility.layers`) in the order the
    forward pass first calls them."""
    if selection is None:
        modules = {m: name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
        if not modules:
            raise FragilityError("the model has no Conv2d or Linear layer: there are no weights to filter.")
    else:
        modules = {m: name for name, m in selection.select(model).items()}
        renormed = [n for m, n in modules.items() if getattr(m, "max_norm", None) is not None]
        if renormed:
            raise FragilityError(f"layers: {', '.join(renormed)} renormalizes its weight in place on every call "
                                 "(an Embedding with max_norm), which would undo a stress: leave it out (exclude).")
        if not modules:
            held = [n for n, m in model.named_modules() if n and isinstance(getattr(m, "weight", None), nn.Parameter)]
            raise FragilityError(f"layers ({selection.describe()}) selects no module with a weight parameter; the "
                                 f"model's are {', '.join(held[:8]) or 'none'}{'…' if len(held) > 8 else ''}.")
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
class Plan:
    """One validated sweep: the model, its test inputs, the units, the stresses, the thresholds, the attack and ε.

    `weights` holds each filterable parameter once, by the name of the first layer (in forward order) that holds
    it; `aliases` maps it to every layer that holds it.
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    layers: list[str]
    include_global: bool
    stresses: tuple[Stress, ...]
    A: int
    crafted: str  # "fixed" or "adaptive"
    attack: Attack
    ratio: float
    batch_size: int
    precision: str
    progress: bool
    epsilon: float = 0.0
    x_adv: torch.Tensor | None = None
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    aliases: dict[str, list[str]] = field(default_factory=dict)
    masks_per_pass: int | str = "auto"
    batchnorm: str = "running"
    classes: int = 0
    image: np.ndarray | None = None  # the test images' indices (a coordinate of the per-image results)
    metric: Metric = field(default_factory=Accuracy)  # the response measured (fragility.metrics)
    _theta64: dict = field(default_factory=dict, init=False, repr=False)
    _units: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def filters(self) -> tuple[str, ...]:
        """The stresses' names (the sweep's `filter` coordinate)."""
        return tuple(s.name for s in self.stresses)

    @property
    def units(self) -> list[str]:
        return self.layers + (["global"] if self.include_global else [])

    def param(self, layer: str) -> str:
        """The name under which `weights` holds a layer's weight (itself, or the first layer tied to it)."""
        return next(p for p, names in self.aliases.items() if layer in names)

    def members(self, unit: str) -> list[str]:
        """The parameters a unit stresses: every one once for `global`, else the layer's own."""
        return list(self.weights) if unit == "global" else [self.param(unit)]

    def modules(self, unit: str) -> list[str]:
        """Every layer whose weight the unit changes (a tied layer's partners included)."""
        return [name for p in self.members(unit) for name in self.aliases[p]]

    def expand(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-parameter weights as per-layer weights, for every layer that holds the parameter."""
        return {name: w for p, w in weights.items() for name in self.aliases[p]}

    def unit(self, unit: str) -> Weights:
        """The weights a stress acts on in `unit`, and their range (min and max over all of them)."""
        if unit not in self._units:
            names = self.members(unit)
            for n in names:
                if n not in self._theta64:
                    self._theta64[n] = self.weights[n].to(torch.float64)
            found = Weights.of({n: self.weights[n] for n in names})
            found.theta64 = {n: self._theta64[n] for n in names}
            self._units[unit] = found
        return self._units[unit]

    def range(self, unit: str) -> tuple[float, float]:
        """(lo, hi) of θ: the layer's own, or over every filterable parameter for `global`."""
        found = self.unit(unit)
        return found.lo, found.hi

    def n_params(self, unit: str) -> int:
        return sum(self.weights[n].numel() for n in self.members(unit))

    def autocast(self):
        """bfloat16 autocast when asked for, else nothing."""
        if self.precision == "bfloat16":
            return torch.autocast(self.x.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def chance(self) -> float:
        """The metric's chance level, the above-chance scaling's zero: for top-1 accuracy c = max(1/K, the share of
        the most frequent label); NaN for a metric without one."""
        return self.metric.chance(self.y, self.classes)

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


def method(attack, crafted=None) -> tuple[Attack, str]:
    """(the attack, when it is crafted) from a sweep's `attack` and `crafted`: `attack="fixed"` or `"adaptive"` is
    the earlier spelling of FGSM crafted so."""
    if crafted is not None:
        checks.require(crafted, checks.one_of(CRAFTED), "crafted")
    if isinstance(attack, str) and attack in CRAFTED:
        if crafted not in (None, attack):
            raise FragilityError(f"attack {attack!r} (the earlier spelling of FGSM crafted so) contradicts crafted "
                                 f"{crafted!r}: pass attack=fr.FGSM() (or another attack) with crafted.")
        return as_attack(None), attack
    if not (isinstance(attack, Attack) or (isinstance(attack, str) and attack in ATTACKS)):
        raise FragilityError(f"attack must be an attack such as fr.FGSM(0.1) or fr.PGD(0.1, steps=10), a registered "
                             f"attack's name ({', '.join(ATTACKS)}), or 'fixed' / 'adaptive' (FGSM crafted so, the "
                             f"earlier spelling); got {checks._shown(attack)}.")
    return as_attack(attack), crafted or "fixed"


def _parameters(model: nn.Module, found: list[str]) -> dict[str, list[str]]:
    """Each filterable parameter by the first layer (in forward order) that holds it → every layer that holds it."""
    modules, first, aliases = dict(model.named_modules()), {}, {}
    for name in found:
        aliases.setdefault(first.setdefault(id(modules[name].weight), name), []).append(name)
    return aliases


def prepare(model: nn.Module, x, y=None, *, A: int = 25, filters=FILTERS, layers=None, include_global: bool = True,
            epsilon="auto", attack="fixed", crafted=None, ratio: float = 0.5, batch_size: int = 500, device=None,
            precision: str = "float32", progress: bool = True, masks_per_pass="auto", batchnorm: str = "running",
            image=None, metric="accuracy") -> Plan:
    """Validate every argument of a sweep and compute what all units share (ε, fixed adversarial inputs).

    Call it inside `fragility.preserve.preserved(model)`: it puts the model in eval mode and gives it a hook that
    hands every call a copy of its inputs (so that a model that edits its input in place changes neither the
    caller's tensors nor the sweep's). The caller's model is not moved: a model on another device than `device` is
    copied there. Under `batchnorm="batch"` call it inside `batchnorm_statistics(model, "batch")`, so that the ε
    search and the fixed adversarial inputs see the same network as the sweep. The metric is checked on the model's
    first logits; the ε search stays defined by top-1 accuracy whatever the metric.
    """
    A = check_intervals(A)
    metric = as_metric(metric)
    stresses = as_stresses(filters, "filters")
    attack, crafted = method(attack, crafted)
    precision = checks.require(precision, checks.one_of(PRECISIONS), "precision")
    batchnorm = checks.require(batchnorm, checks.one_of(BATCHNORM), "batchnorm")
    batch_size = checks.count(batch_size, "batch_size")
    ratio = checks.number(ratio, "ratio", 0, 1, open_low=True, open_high=True)
    include_global = checks.flag(include_global, "include_global")
    progress = checks.flag(progress, "progress")
    selection = as_layers(layers) if isinstance(layers, (dict, Layers)) else None
    if not (isinstance(masks_per_pass, str) and masks_per_pass == "auto"):
        masks_per_pass = int(checks.require(masks_per_pass, checks.Rule(
            lambda v: checks.is_whole(v) and v >= 1, "a whole number ≥ 1, or 'auto'"), "masks_per_pass"))
    if not (isinstance(epsilon, str) and epsilon == "auto"):
        epsilon = float(checks.require(epsilon, checks.real(0, what="a finite number ≥ 0, or 'auto'"), "epsilon"))
        if attack.epsilon is not None and attack.epsilon != epsilon:
            raise FragilityError(f"epsilon {epsilon:g} contradicts the attack's own ε {attack.epsilon:g}: give one "
                                 "of them.")
    model = checks.model(model)
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
    model.register_forward_pre_hook(copy_inputs)
    x, y = x.to(target, params[0].dtype), y.to(target)  # a float64 model gets float64 inputs
    found = filterable_layers(model, x[:2], selection)
    with torch.no_grad():
        first = model(x[:2])  # two examples: batch statistics need more than one
    classes = first.shape[1]
    if int(y.min()) < 0 or int(y.max()) >= classes:
        raise FragilityError(f"labels must lie in 0..{classes - 1} for this {classes}-class model, "
                             f"got {int(y.min())}..{int(y.max())}.")
    with torch.no_grad():
        metric.check(first, y[:2])
    if layers is None or selection is not None:
        layers = found
    else:
        layers = [layers] if isinstance(layers, str) else layers
        if not isinstance(layers, (list, tuple)) or not all(isinstance(n, str) for n in layers) \
                or len(set(layers)) != len(layers):
            raise FragilityError(f"layers must be None (every layer), a layer name, a list of distinct layer names "
                                 f"(possibly empty: the global unit only) or a mapping of types, include and exclude "
                                 f"(fragility.layers); got {layers!r}.")
        if not layers and not include_global:
            raise FragilityError("nothing to sweep: layers is empty and include_global is False.")
        unknown = [n for n in layers if n not in found]
        if unknown:
            raise FragilityError(f"unknown layer(s) {', '.join(map(repr, unknown))}: the filterable layers are "
                                 f"{', '.join(found)}.")
        layers = [n for n in found if n in layers]
    aliases = _parameters(model, found)
    wanted = {p for p, names in aliases.items() if include_global or any(n in layers for n in names)}
    modules = dict(model.named_modules())
    weights = {p: modules[p].weight.detach() for p in aliases if p in wanted}
    for p, w in weights.items():
        check_weights(w, f"the weights of layer {p!r}")
    plan = Plan(model, x, y, layers, include_global, stresses, A, crafted, attack, ratio, batch_size, precision,
                progress, weights=weights, aliases=aliases, masks_per_pass=masks_per_pass, batchnorm=batchnorm,
                classes=int(classes), image=image, metric=metric)
    if epsilon == "auto":
        epsilon = attack.epsilon if attack.epsilon is not None else \
            search_epsilon(model, x, y, ratio=ratio, batch_size=batch_size, attack=attack)
    plan.epsilon, plan.attack = epsilon, attack.at(epsilon)
    if crafted == "fixed":
        plan.x_adv = plan.attack(model, x, y, batch_size=batch_size)
    return plan
