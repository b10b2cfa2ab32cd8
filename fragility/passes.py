"""Evaluation passes of the sweep (the engine's inner loop): the FX graph cut at a unit, and K masks in one pass.

A unit's network is split at its filtered layers (`_Net`): `upstream`, what depends on none of them, runs once per
batch and its values are reused for every mask; `downstream`, the layers and what depends on them (residual branches
included), runs per chunk of K masks. In a chunk the K filtered weights θ̃ = B ⊙ θ (Eq. 1) are stacked and K is
folded into the batch, mask-major: a filtered layer whose input the masks share becomes one convolution (or matmul)
with K·C_out outputs; one whose input is already folded (a layer called twice, every layer after the first for
`global`) runs once per mask on its slice of the batch; every other operation runs unchanged on K·N samples, upstream
values repeated K times where they meet folded ones. An attack crafted against each filtered network
(`crafted="adaptive"`) runs the attack's own `perturb` with the input gradient of each masked network: K masks are
folded into the batch of the whole network, so that one backward gives each masked network its own input gradient;
one mask at a time reuses the upstream instead for the gradient at the clean inputs (forward once per batch, backward
per mask), and an iterative attack's later steps, at inputs of their own, run the whole network (one forward and one
backward per step). Models FX cannot trace, units whose upstream hands the downstream part something other than
batches of samples (a batch size…), and units with a filtered layer other than a convolution (1-, 2- or 3-D) or a
Linear fed by the samples (an Embedding, a LayerNorm, a layer on learned positions…) run one mask per pass.

On CPU batching buys nothing: ResNet-18 at 1×28×28, 100 images, A = 4, four layers + global, one thread of this
project's 2-core machine took 7.8 / 8.3 / 9.5 s (fixed attack) and 17.2 / 20.1 / 19.7 s (adaptive) at K = 1 / 4 / 8,
and a vmap of the downstream graph, tried instead of folding, was slower still (batch norm on a vmapped batch is
decomposed and copies). Hence CPU_MASKS_PER_PASS = 1; on CUDA "auto" fills free memory (`resolve`).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .plan import Plan

CPU_MASKS_PER_PASS = 1  # "auto" on CPU: batching masks measured no faster there (see above)
MEMORY_FRACTION = 0.5  # "auto" on CUDA: the share of free memory K masks may take, from the peak of one


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def forward_with_weight(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, rest=(), kwargs=None):
    """The layer's forward on (x, *rest, **kwargs) with `weight` in place of its own: a convolution or a Linear
    directly, any other module (Embedding, LayerNorm, a transposed convolution, …) through `functional_call`."""
    if isinstance(module, _CONV) and not rest and not kwargs:
        return module._conv_forward(x, weight, module.bias)
    if isinstance(module, nn.Linear) and not rest and not kwargs:
        return F.linear(x, weight, module.bias)
    return torch.func.functional_call(module, {"weight": weight}, (x, *rest), kwargs or {})


def _repeat(value, k: int):
    """A batch of N samples as k·N: the batch repeated k times (mask-major); itself when k = 1 or not a tensor."""
    return value.repeat(k, *[1] * (value.dim() - 1)) if k > 1 and isinstance(value, torch.Tensor) else value


def _stacked_forward(module: nn.Module, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The layer (a convolution or a Linear) with each of k stacked weights on the same N samples x, as one layer
    with k·C_out outputs; the outputs folded mask-major to k·N samples. A grouped convolution's outputs are stacked
    group by group."""
    k, groups = len(weights), getattr(module, "groups", 1)
    w = weights.unflatten(1, (groups, -1)).transpose(0, 1).flatten(0, 2)
    b = None if module.bias is None else module.bias.view(groups, 1, -1).expand(groups, k, -1).flatten()
    if isinstance(module, _CONV):  # (N, groups·k·C_out/groups, …) → (k·N, C_out, …)
        return module._conv_forward(x, w, b).unflatten(1, (groups, k, -1)).movedim(2, 0).flatten(2, 3).flatten(0, 1)
    return F.linear(x, w, b).unflatten(-1, (k, -1)).movedim(-2, 0).flatten(0, 1)  # (N, …, k·C_out) → (k·N, …, C_out)


class _Graph(fx.Interpreter):
    """The traced model, run node by node, with chosen layers' weights replaced (K stacked weights when k > 1)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=False)
        self.nodes = list(gm.graph.nodes)
        self.placeholder = next(n for n in self.nodes if n.op == "placeholder")
        self.override: dict[str, torch.Tensor] = {}
        self.k = 1
        self.shared: dict[fx.Node, torch.Tensor] = {}  # N-sample values the k masks share, repeated where needed

    def run_node(self, n: fx.Node):
        self.node = n
        layer = n.op == "call_module" and n.target in self.override
        for a in n.all_input_nodes:
            if a in self.shared and self.env[a] is self.shared[a] and not (layer and a is n.args[0]):
                self.env[a] = _repeat(self.shared[a], self.k)
        return super().run_node(n)

    def call_module(self, target, args, kwargs):
        if target not in self.override:
            return super().call_module(target, args, kwargs)
        module, weight = self.submodules[target], self.override[target]
        if self.k == 1:
            return forward_with_weight(module, args[0], weight, args[1:], kwargs)
        if self.node.args[0] in self.shared:
            return _stacked_forward(module, self.shared[self.node.args[0]], weight)
        return torch.cat([forward_with_weight(module, part, w) for part, w in zip(args[0].chunk(self.k), weight)])

    def cut(self, layers: list[str]) -> tuple[list[fx.Node], list[fx.Node], list[fx.Node]] | None:
        """(upstream nodes, frontier, downstream nodes) of `layers`, or None when the graph never calls one of them."""
        calls = {n for n in self.nodes if n.op == "call_module" and n.target in layers}
        if {n.target for n in calls} != set(layers):
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

    def evaluate(self, nodes: list[fx.Node], env: dict, keep=()) -> object:
        """Run `nodes` in order over `env` (node → value), freeing values after their last use unless kept; the last."""
        last = {a: j for j, n in enumerate(nodes) for a in n.all_input_nodes}
        self.env = env
        for j, n in enumerate(nodes):
            env[n] = self.run_node(n)
            for a in n.all_input_nodes:
                if last[a] == j and a not in keep:
                    del env[a]
        return env[nodes[-1]] if nodes else None


def _trace(model: nn.Module) -> _Graph | None:
    try:
        return _Graph(fx.symbolic_trace(model))
    except Exception as err:  # any tracing failure means: sweep the plain way
        warnings.warn(f"the model cannot be traced ({type(err).__name__}); every mask runs the whole network, "
                      "which is correct but slower.", stacklevel=3)
        return None


def _fresh(values: list) -> list:
    """Copies of cached tensors, so that in-place operations downstream never touch the cache."""
    return [v.clone() if isinstance(v, torch.Tensor) else v for v in values]


class _Net:
    """The network with `layers` filtered, as upstream(x) → frontier values and downstream(weights, values, k) →
    logits of the k masks, mask-major (k·N, classes). Without a cut (untraceable model, a layer the graph never calls)
    the frontier is the input itself and k is 1."""

    def __init__(self, model: nn.Module, graph: _Graph | None, layers: list[str]):
        self.model, self.graph = model, graph
        self.cut = graph.cut(layers) if graph is not None else None
        if self.cut is None:
            self.batched, self.layers_fed = [True], True
            return
        up, frontier, down = self.cut
        depends = {graph.placeholder}
        for n in up + down:
            if any(a in depends for a in n.all_input_nodes):
                depends.add(n)
        self.batched = [n in depends for n in frontier]  # the frontier values computed from the input samples
        # K masks are folded into the batch only where every filtered layer is a convolution or a Linear called on
        # one input computed from the samples: an Embedding or any other module, and a layer fed something computed
        # without the samples (positions, a learned token), have no batch of samples to fold into: one mask per pass
        self.layers_fed = all(n.args[0] in depends and len(n.args) == 1 and not n.kwargs
                              and isinstance(graph.submodules[n.target], (*_CONV, nn.Linear))
                              for n in down if n.op == "call_module" and n.target in layers)

    def upstream(self, x: torch.Tensor) -> list:
        """The frontier values for inputs x; notes whether those computed from x are all batches of len(x) samples."""
        if self.cut is None:
            return [x]
        up, frontier, _ = self.cut
        env = {self.graph.placeholder: x.clone()}  # a model that edits its input in place edits this copy
        self.graph.evaluate(up, env, keep=frontier)
        values = [env[n] for n in frontier]
        self.foldable = all(isinstance(v, torch.Tensor) and v.dim() > 0 and len(v) == len(x)
                            for v, b in zip(values, self.batched) if b)
        return values

    def downstream(self, weights: dict[str, torch.Tensor], values: list, k: int = 1, shared: bool = False):
        """Logits with the unit's weights replaced: k stacked weight sets when k > 1, on frontier values of N samples
        shared by the k masks (`shared`) or already folded to k·N."""
        values = _fresh(values)
        if self.cut is None:
            return torch.func.functional_call(self.model, {f"{n}.weight": w for n, w in weights.items()}, tuple(values))
        if k > 1 and not (self.foldable and self.layers_fed):
            raise RuntimeError("the part of the model before the filtered layer hands on more than batches of samples")
        graph = self.graph
        graph.override, graph.k = weights, k
        env = dict(zip(self.cut[1], values))
        graph.shared = {n: env[n] for n, b in zip(self.cut[1], self.batched) if b} if shared and k > 1 else {}
        try:
            return graph.evaluate(self.cut[2], env)
        finally:
            graph.override, graph.k, graph.shared = {}, 1, {}

    def __call__(self, weights: dict[str, torch.Tensor], x: torch.Tensor, k: int = 1) -> torch.Tensor:
        """Logits of the whole network on inputs x already folded to k·N."""
        return self.downstream(weights, self.upstream(x), k)


def _hits(plan: Plan, logits: torch.Tensor, y: torch.Tensor, k: int) -> np.ndarray:
    """The per-example metric (top-1: which examples are classified correctly, booleans), (k, parts, len(y)), from
    mask-major logits (k · parts · len(y), classes) of inputs stacked in parts."""
    return plan.metric.per_example(logits, y.repeat(len(logits) // len(y))).reshape(k, -1, len(y))


def _count(plan: Plan, net: _Net, weight_sets: list, k: int, batches, bar=None,
           clean_only: bool = False) -> np.ndarray:
    """Each weight set's network's per-example metric (top-1: which examples it classifies correctly, booleans),
    (len(weight_sets), inputs, examples) over `batches`, masks in chunks of at most k per pass. Clean and fixed
    adversarial inputs share a pass, except under batch statistics (`plan.batchnorm == "batch"`), where each is a
    batch of its own."""
    correct = np.zeros((len(weight_sets), 1 if clean_only else 2, len(plan.y)), dtype=plan.metric.dtype)
    if not weight_sets:
        return correct
    chunks = np.array_split(np.arange(len(weight_sets)), -(-len(weight_sets) // k))  # sizes k or k − 1, largest first
    fixed = clean_only or plan.crafted == "fixed"
    apart = plan.batchnorm == "batch"
    start = 0
    for xb, yb, ab in batches:
        part = slice(start, start + len(yb))
        start += len(yb)
        with torch.no_grad(), plan.autocast():
            if fixed:
                parts = [xb] if clean_only else [xb, ab] if apart else [torch.cat([xb, ab])]
                frontiers = [net.upstream(p) for p in parts]
            else:  # what one mask at a time reuses (see _adaptive)
                frontier = _frontier_vjp(net, xb) if len(chunks[-1]) == 1 else None
            for idx in chunks:
                sets = [weight_sets[j]() for j in idx]
                weights = {n: torch.stack([s[n] for s in sets]) for n in sets[0]} if len(idx) > 1 else sets[0]
                if fixed:
                    correct[idx, :, part] = np.concatenate(
                        [_hits(plan, net.downstream(weights, f, len(idx), shared=True), yb, len(idx))
                         for f in frontiers],
                        axis=1)
                else:
                    correct[idx, :, part] = _adaptive(plan, net, weights, xb, yb, frontier, len(idx), part.start)
                if bar is not None:
                    bar.update(len(idx))
    return correct


def _frontier_vjp(net: _Net, x: torch.Tensor) -> tuple:
    """(frontier values, indices of the float ones computed from x, those recomputed differentiably, their vjp to x)."""
    values = net.upstream(x)
    floats = [i for i, (v, b) in enumerate(zip(values, net.batched))
              if b and isinstance(v, torch.Tensor) and v.is_floating_point()]

    def differentiable(x):
        found = net.upstream(x)
        return tuple(found[i] for i in floats)

    return values, floats, *torch.func.vjp(differentiable, x)


def _adaptive(plan: Plan, net: _Net, weights: dict, x: torch.Tensor, y: torch.Tensor, frontier: tuple | None,
              k: int, start: int) -> np.ndarray:
    """The per-example metric (top-1: which examples are classified correctly, booleans), (k, 2, len(y)), on clean
    inputs and on the attack's inputs crafted against each of the k masked networks (`plan.attack.perturb`, one
    forward and one backward per gradient it asks for); `start` is the batch's first example's number in the test
    set."""
    xs, ys, found = _repeat(x, k), _repeat(y, k), []

    def loss(inputs, forward):
        logits = forward(inputs)
        return F.cross_entropy(logits.float(), ys, reduction="sum"), logits

    def gradient(inputs):
        if inputs is xs and k == 1:  # the clean batch's cached upstream: the downstream part's gradient at the
            values, floats, cached, up_vjp = frontier  # frontier, then upstream's backward
            cotangents, logits = torch.func.grad(loss, has_aux=True)(cached, lambda diff: net.downstream(
                weights, [diff[floats.index(i)] if i in floats else v for i, v in enumerate(values)]))
            (grad,) = up_vjp(cotangents)
        else:  # the whole network on the k·N folded samples: one forward and one backward for the k masks
            grad, logits = torch.func.grad(loss, has_aux=True)(inputs, lambda v: net(weights, v, k))
        if inputs is xs:
            found.append(logits)
        return grad

    adversarial = net(weights, plan.attack.perturb(gradient, xs, _repeat(torch.arange(start, start + len(y)), k)), k)
    clean = found[0] if found else net.downstream(weights, frontier[0]) if k == 1 else net(weights, xs, k)
    return np.concatenate([_hits(plan, clean, y, k), _hits(plan, adversarial, y, k)], axis=1)


def resolve(plan: Plan, graph: _Graph | None, unit: str, weight_sets: list, clean_only: bool = False) -> int:
    """K, the masks per pass for `unit`: `plan.masks_per_pass`, or for "auto" CPU_MASKS_PER_PASS on CPU and on CUDA
    as many masks as MEMORY_FRACTION of the free memory holds, from the peak memory of one mask on one batch; 1
    without a graph cut."""
    net = _Net(plan.model, graph, plan.modules(unit))
    if net.cut is None or not weight_sets or not net.layers_fed:
        return 1
    if plan.batchnorm == "batch":
        return 1  # batch statistics over K folded masks would mix the masks
    if plan.masks_per_pass != "auto":
        return plan.masks_per_pass
    device = plan.x.device
    if device.type != "cuda":
        return CPU_MASKS_PER_PASS
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    _count(plan, net, weight_sets[:1], 1, [next(plan.batches())], clean_only=clean_only)
    peak = torch.cuda.max_memory_allocated(device) - start
    free = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return max(1, min(len(weight_sets), int(MEMORY_FRACTION * free) // max(peak, 1)))


def evaluate(plan: Plan, graph: _Graph | None, unit: str, weight_sets: list, bar=None,
             clean_only: bool = False, masks_per_pass: int | None = None) -> tuple[np.ndarray, int]:
    """Each weight set's network's per-example metric (see `_count`) and the K it used. When the
    masks cannot share a pass: a warning, and K = 1 for this unit and, through `plan.masks_per_pass`, the ones
    after it."""
    net = _Net(plan.model, graph, plan.modules(unit))
    k = 1 if net.cut is None or not net.layers_fed or plan.batchnorm == "batch" else \
        masks_per_pass or resolve(plan, graph, unit, weight_sets, clean_only)
    try:
        return _count(plan, net, weight_sets, k, plan.batches(), bar, clean_only), k
    except RuntimeError as err:  # an operation that breaks on K·N samples, or memory runs out
        if k == 1:
            raise
        warnings.warn(f"the masks cannot share a pass ({type(err).__name__}: {str(err).split('. ')[0]}); from "
                      f"{unit!r} on, one mask per pass, which is correct but slower.", stacklevel=2)
        plan.masks_per_pass = 1
        if bar is not None:
            bar.reset()
        return _count(plan, net, weight_sets, 1, plan.batches(), bar, clean_only), 1


def count_correct(plan: Plan, graph: _Graph | None, unit: str, weight_sets: list, bar=None,
                  clean_only: bool = False, masks_per_pass: int | None = None) -> np.ndarray:
    """Correct counts (len(weight_sets), inputs) with the unit's weights replaced by each weight_sets[k]() in turn.

    Through the graph cut when there is one (upstream once per batch, the layers and their dependants per chunk of
    masks), else the whole network per mask. Inputs are clean and adversarial (fixed: `plan.x_adv`; adaptive: the
    attack crafted against each filtered network), or clean only. K masks share a pass: `masks_per_pass`, by default
    `plan.masks_per_pass` ("auto": see `resolve`).
    """
    return evaluate(plan, graph, unit, weight_sets, bar, clean_only, masks_per_pass)[0].sum(-1)
