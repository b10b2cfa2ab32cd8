""""What our run shows" for the figure chapters (Fig. 4–10): the same rules as the claims they illustrate, applied
to the selection the chapter shows, written out as Markdown."""
from __future__ import annotations

import numpy as np
import xarray as xr

from . import data, verdicts
from .scores import characterize, curves, layer_scores
from .selection import check_parameters
from .studies.batchnorm import SURVIVES

WORDS = {"Fr": "fragile", "Ro": "robust", "Af": "antifragile"}
GREATER = {"Fr": "the clean response is greater (r_ε < −τ)", "Ro": "clean and adversarial responses are equal "
           "within τ", "Af": "the adversarial response is greater (r_ε > τ)"}


def _label(value, tol=verdicts.TAU) -> str:
    return str(characterize(xr.DataArray(value), tol).item()) if np.isfinite(value) else "—"


def fig04_baseline(ds, model=None, dataset=None, layer=None, epoch=None, seed=None, filter="h1", input="clean"):
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, epoch=epoch, seed=seed, filter=filter,
                         input=input)
    r = layer_scores(ds, p["model"], p["dataset"], seed, p["filter"]).sel(layer=p["layer"], epoch=p["epoch"])
    key = "r_xe" if p["input"] == "adversarial" else "r_x"
    value = float(r[key])
    return (f"`{p['layer']}` of {p['model']} on {p['dataset']} at epoch {p['epoch']}, {p['filter']}, {p['input']} "
            f"inputs: {key} = {value:+.3f}, **{WORDS.get(_label(value), '—')}** by the rule of Eq. 14–15 "
            f"(Fr < −τ ≤ Ro ≤ τ < Af, τ = {verdicts.TAU}): the scaled response lies "
            f"{'above' if value > 0 else 'below'} the baseline φ̄ on average.")


def fig05_targeted(ds, model=None, dataset=None, layer=None, seed=None, filter="combined"):
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, seed=seed, filter=filter)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], filter=p["filter"])
    gap = c["accuracy"].sel(input="clean") - c["accuracy"].sel(input="adversarial")
    chance = 1 / data.info(p["dataset"]).classes
    full = c["accuracy"].sel(input="clean").isel(alpha=-1)
    kept = (full - chance) / (c["base_accuracy"].sel(input="clean") - chance)
    return (f"`{p['layer']}` of {p['model']} on {p['dataset']} ({p['filter']}): the clean accuracy exceeds the "
            f"adversarial one at {float((gap > 0).mean()):.0%} of the (epoch, α) cells, by {float(gap.mean()):+.3f} on "
            f"average. With every weight removed (the α = 1 column) the layer keeps "
            + ", ".join(f"{float(k):.0%}" for k in kept.values) + f" of the above-chance accuracy over epochs "
            f"{', '.join(map(str, c['epoch'].values))}: it **"
            + ("survives" if float(kept.mean()) >= SURVIVES else "does not survive")
            + f"** full filtering by the rule of P7 (≥ {SURVIVES:.0%}); Fig. 11 tests why.")


def fig06_filters(ds, model=None, dataset=None, layer=None, seed=None, input="clean"):
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, seed=seed, input=input)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], input=p["input"])
    c = c.sel(epoch=c["epoch"].values[-1])
    parts = []
    for h in ("h1", "h2", "h3"):
        ok = c["response"].sel(filter=h) >= verdicts.KEPT
        share = float((c["n_filtered"].sel(filter=h) / c["n_params"]).where(ok).max())
        parts.append(f"{h} {share:.0%}" if np.isfinite(share) else f"{h} none")
    return (f"`{p['layer']}` of {p['model']} on {p['dataset']}, last epoch: the largest share of its weights each "
            f"filter removes with the scaled response still ≥ {verdicts.KEPT} (the rule of P10): " + ", ".join(parts)
            + ". The combined response averages the three filters' scaled responses (Eq. 13).")


def fig07_landscape(ds, model=None, seed=None, input="clean", filter="combined"):
    p = check_parameters(ds, model=model, seed=seed, input=input, filter=filter)
    rows = []
    for dataset in verdicts._datasets(ds, p["model"]):
        share = verdicts.kept_share(ds, p["model"], dataset)
        rows.append(f"on {dataset} the whole network loses up to {share:.0%} of its weights to some filter with the "
                    f"clean scaled response still ≥ {verdicts.KEPT}")
    return f"{p['model']}: " + "; ".join(rows) + " (the rule of P10, last epoch, every seed)."


def fig08_scores(ds, model=None, dataset=None, layer=None, epoch=None, seed=None, filter="h1"):
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, epoch=epoch, seed=seed, filter=filter)
    r = layer_scores(ds, p["model"], p["dataset"], seed, p["filter"]).sel(layer=p["layer"], epoch=p["epoch"])
    x, xe, e = (float(r[k]) for k in ("r_x", "r_xe", "r_e"))
    edge = p["layer"] in verdicts.edge_layers(ds, p["model"])
    return (f"`{p['layer']}` at epoch {p['epoch']} ({p['filter']}): r_x = {x:+.3f} ({WORDS.get(_label(x), '—')}), "
            f"r_xε = {xe:+.3f} ({WORDS.get(_label(xe), '—')}), r_ε = {e:+.3f}: {GREATER.get(_label(e), '—')}."
            + (f" It is the model's {'first' if p['layer'] == verdicts.edge_layers(ds, p['model'])[0] else 'last'} "
               f"layer, which claim P5 calls fragile in both scores: "
               f"**{'as claimed' if x < -verdicts.TAU and xe < -verdicts.TAU else 'not here'}**." if edge else ""))


def fig09_global(ds, filter="h1", normalized=True):
    rows = [verdicts.p2(ds), verdicts.p1(ds), verdicts.p3(ds), verdicts.p4(ds)]
    return "\n".join(f"- **{r['id']}** ({r['verdict']}): {r['evidence'] or r['rule']}" for r in rows)


def fig10_local(ds, seed=None, filter="h1", tol=verdicts.TAU, models=None):
    rows = [verdicts.p5(ds, None, tol), verdicts.p6(ds, None, tol), verdicts.p11(ds, tol), verdicts.p12(ds, tol)]
    return ("\n".join(f"- **{r['id']}** ({r['verdict']}): {r['evidence'] or r['rule']}" for r in rows)
            + "\n\n" + verdicts.antifragility_note(ds, tol=tol))
