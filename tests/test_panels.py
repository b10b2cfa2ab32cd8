"""The figures' panel functions: each takes data already selected down to its panel and the `ax` to draw into, creates
no figure, draws on a figure of one's own what its chapter's figure draws, and refuses what it cannot draw."""
import matplotlib.figure
import numpy as np
import pytest
from matplotlib.figure import Figure
from test_figures import folder  # noqa: F401 (the module's results folder, shared)

from fragility import FragilityError, store
from fragility.figures import fig04_baseline, fig05_targeted, fig06_filters, fig07_landscape, fig08_scores
from fragility.figures import fig09_global, fig10_local
from fragility.selection import choices, curves, layer_scores, select

MODEL, DATASET, LAYER, EPOCH = "smallcnn", "digits", "blocks.1.conv", 2


@pytest.fixture(scope="module")
def ds(folder):  # noqa: F811
    return store.open_results(folder).load()


def drawn(ax) -> dict:
    """What an Axes shows: its texts, the data of its lines, images and bars, and how many filled areas."""
    return {"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
            "lines": [(line.get_label(), np.asarray(line.get_xdata(), float).tolist(),
                       np.asarray(line.get_ydata(), float).tolist()) for line in ax.get_lines()],
            "images": [np.ma.filled(np.ma.asarray(im.get_array(), float), np.nan).tolist() for im in ax.get_images()],
            "bars": [(p.get_x(), p.get_height()) for p in ax.patches],
            "areas": len(ax.collections), "texts": [t.get_text() for t in ax.texts]}


def same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_equal(a[key], b[key], err_msg=key)


def panels(ds):
    """Each paper panel: (what to call on one's own axes, how many axes it takes, the chapter figure's axes)."""
    c = curves(ds, MODEL, DATASET).sel(layer=LAYER, epoch=EPOCH, filter="h1")
    r = layer_scores(ds, MODEL, DATASET, filter="h1").sel(layer=LAYER, epoch=EPOCH)
    c5 = curves(ds, MODEL, DATASET).sel(layer=LAYER, filter="combined")
    c6 = curves(ds, MODEL, DATASET).sel(layer=LAYER, input="clean")
    threshold = select(ds, MODEL, DATASET).sel(layer=LAYER).isel(seed=0, epoch=-1)["threshold"]
    c7 = curves(ds, MODEL).sel(filter="combined", input="clean", dataset=DATASET)
    g = fig09_global.global_scores(ds, "h1").sel(model=MODEL)
    local = layer_scores(ds, MODEL, filter="h1").drop_sel(layer="global").transpose("dataset", "layer", "epoch")
    f4 = fig04_baseline.figure(ds, model=MODEL, layer=LAYER, epoch=EPOCH, input="adversarial")
    f5 = fig05_targeted.figure(ds, model=MODEL, layer=LAYER)
    f6 = fig06_filters.figure(ds, model=MODEL, layer=LAYER)
    f7 = fig07_landscape.figure(ds, model=MODEL)
    f8 = fig08_scores.figure(ds, model=MODEL, layer=LAYER, epoch=EPOCH)
    f9 = fig09_global.figure(ds)
    f10 = fig10_local.figure(ds, models=[MODEL])
    order = fig09_global.paper_order(choices(ds)["model"])
    row9 = [m for _, m in order].index(MODEL)
    letter = order[row9][0]
    local10 = [ax for sub in f10.subfigs for ax in sub.axes]
    return {
        "fig04 (a)": (lambda ax: fig04_baseline.plot_baseline(c, ax=ax), 1, [f4.axes[0]]),
        "fig04 (b)": (lambda ax: fig04_baseline.plot_response(c, float(r["r_xe"]), "adversarial", ax=ax), 1,
                      [f4.axes[1]]),
        "fig05 clean": (lambda ax: fig05_targeted.plot_accuracy(c5, "clean", ax=ax, colorbar=False), 1,
                        [f5.axes[0]]),
        "fig05 difference": (lambda ax: fig05_targeted.plot_difference(c5, ax=ax), 1, [f5.axes[2]]),
        "fig06 h2": (lambda ax: fig06_filters.plot_filter(c6.sel(filter="h2", epoch=EPOCH),
                                                          threshold.sel(filter="h2"), "h2 (low-pass)", ax=ax), 1,
                     [f6.axes[1]]),
        "fig06 h3 accuracy": (lambda ax: fig06_filters.plot_accuracy(c6.sel(filter="h3"), ax=ax), 1, [f6.axes[5]]),
        "fig06 combined": (lambda ax: fig06_filters.plot_combined(c6.sel(filter="combined"), ax=ax), 1,
                           [f6.axes[6]]),
        "fig07": (lambda ax: fig07_landscape.plot_landscape(c7, ax=ax), 3, f7.axes[:3]),
        "fig08 (a)": (lambda ax: fig08_scores.plot_input_scores(c, r, ax=ax), 2, [f8.axes[0], f8.axes[2]]),
        "fig08 (b)": (lambda ax: fig08_scores.plot_targeting(c, r, ax=ax), 2, [f8.axes[1], f8.axes[3]]),
        "fig09": (lambda ax: fig09_global.plot_scores(g, letter, ax=ax), 3, f9.axes[3 * row9:3 * row9 + 3]),
        "fig10": (lambda ax: fig10_local.plot_local(local, ax=ax), 3, local10[:3]),
    }


def test_each_panel_draws_on_ones_own_axes_what_its_chapter_draws(ds):
    found = panels(ds)
    assert len(found) == 12
    for name, (draw_it, count, expected) in found.items():
        fig = Figure()
        axes = list(fig.subplots(1, count, squeeze=False)[0])
        draw_it(axes[0] if count == 1 else axes)
        for mine, theirs in zip(axes, expected):
            shown = drawn(mine)
            assert shown["lines"] or shown["images"] or shown["bars"], name
            same(shown, drawn(theirs))


def test_panels_compose_on_one_figure(ds):
    c = curves(ds, MODEL, DATASET).sel(layer=LAYER, epoch=EPOCH, filter="h1")
    r = layer_scores(ds, MODEL, DATASET, filter="h1").sel(layer=LAYER, epoch=EPOCH)
    fig = Figure()
    a, b, d = fig.subplots(1, 3)
    fig04_baseline.plot_baseline(c, ax=a)
    fig08_scores.plot_targeting(c, r, ax=[b, d])
    # the baseline φ̄ = 1 − (share removed) (Eq. 10), drawn against α
    expected = 1 - c["n_filtered"].values / float(c["n_params"])
    np.testing.assert_allclose(a.get_lines()[0].get_ydata(), expected)
    np.testing.assert_allclose(a.get_lines()[0].get_xdata(), c["alpha"].values)
    # r_ε's area: the adversarial response above, the clean one below, titled with r_ε
    clean, adversarial = (c["response"].sel(input=i).values for i in ("clean", "adversarial"))
    np.testing.assert_allclose(b.get_lines()[0].get_ydata(), adversarial)
    np.testing.assert_allclose(b.get_lines()[1].get_ydata(), clean)
    np.testing.assert_allclose(d.get_lines()[0].get_ydata(), adversarial - clean)
    assert b.get_title().startswith(f"(b) $r_\\epsilon$ = {float(r['r_e']):+.3f}")
    assert len(fig.axes) == 4  # the three and the baseline's twin axis


def test_panels_create_no_figure(ds, monkeypatch):
    found = panels(ds)
    own = {name: list(Figure().subplots(1, count, squeeze=False)[0]) for name, (_, count, _) in found.items()}
    made = []
    original = matplotlib.figure.Figure.__init__

    def counted(self, *args, **kwargs):
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "__init__", counted)
    for name, (draw_it, count, _) in found.items():
        draw_it(own[name][0] if count == 1 else own[name])
    assert made == []


def test_panels_refuse_what_they_cannot_draw(ds):
    c = curves(ds, MODEL, DATASET).sel(layer=LAYER, epoch=EPOCH, filter="h1")
    r = layer_scores(ds, MODEL, DATASET, filter="h1").sel(layer=LAYER, epoch=EPOCH)
    ax = Figure().subplots()
    cases = [
        (lambda: fig04_baseline.plot_baseline(c, ax=None), "ax must be a matplotlib Axes to draw into; got NoneType"),
        (lambda: fig04_baseline.plot_baseline(c, ax=ax.figure), "ax must be a matplotlib Axes"),
        (lambda: fig04_baseline.plot_baseline(curves(ds, MODEL, DATASET).sel(layer=LAYER, filter="h1"), ax=ax),
         r"c\['baseline'\] must have the dims \(alpha\); got \(epoch, alpha\): select one value of epoch first"),
        (lambda: fig04_baseline.plot_baseline(c["baseline"], ax=ax),
         "c must be an xarray Dataset selected down to one panel; got DataArray"),
        (lambda: fig04_baseline.plot_baseline(c.drop_vars("n_params"), ax=ax), "c lacks the variable 'n_params'"),
        (lambda: fig04_baseline.plot_response(c, 0.1, "noisy", ax=ax), "input must be one of 'clean', 'adversarial'"),
        (lambda: fig04_baseline.plot_response(c, "0.1", ax=ax), "score must be a number"),
        (lambda: fig08_scores.plot_targeting(c, r, ax=[ax]), "ax must be a sequence of 2 matplotlib Axes"),
        (lambda: fig08_scores.plot_targeting(c, r.drop_vars("r_e"), ax=[ax, ax]), "r lacks the variable 'r_e'"),
        (lambda: fig10_local.plot_local(layer_scores(ds, MODEL, filter="h1"), tol=-1, ax=[ax] * 3),
         "tol must be a finite number ≥ 0"),
        (lambda: fig10_local.plot_labels(r["r_x"], r["r_x"], fig10_local.SCORE_MARKS["r_x"], "t", ax=ax),
         r"scores must have the dims \(layer, epoch\)"),
    ]
    for call, message in cases:
        with pytest.raises(FragilityError, match=message):
            call()
    assert not ax.get_lines() and not ax.get_images()  # nothing drawn before the refusal


@pytest.mark.slow
def test_study_panels_draw_what_their_chapter_draws(tiny_run):
    import fragility as fr
    from fragility.studies import batchnorm, conventions, depth, neurons, removal, selective

    _, results = tiny_run
    responses = fr.open_results(results)
    study = {name: fr.open_study(results, name) for name in
             ("batchnorm", "conventions", "depth", "neurons", "removal", "selective")}
    bn = batchnorm.shares(study["batchnorm"], MODEL, DATASET, samples=1)
    layer = str(bn["layer"].values[0])
    sweep = curves(responses, MODEL, DATASET).sel(input="clean")
    sweep = sweep.sel(epoch=int(study["batchnorm"].attrs.get("epoch", 0)) or sweep["epoch"].values[-1])
    rm = removal.curves(study["removal"], MODEL, DATASET, None, "clean", responses)
    first = str(rm["layer"].values[0])
    t = depth.table(study["depth"], DATASET)
    sub = study["depth"].sel(dataset=DATASET, model=[str(m) for m in t["model"].values])
    rk = neurons.ranking(study["neurons"], MODEL, DATASET, None, "clean")
    readings = conventions.readings(study["conventions"], responses, MODEL, DATASET).isel(epoch=-1)
    sel = selective.curves(study["selective"], MODEL, DATASET)
    figures = {"fig11": batchnorm.figure(study["batchnorm"], responses, model=MODEL),
               "removal": removal.figure(study["removal"], responses, model=MODEL),
               "depth": depth.figure(study["depth"]),
               "neurons": neurons.figure(study["neurons"], model=MODEL),
               "conventions": conventions.figure(study["conventions"], responses, model=MODEL),
               "fig12": selective.figure(study["selective"], model=MODEL, datasets=DATASET)}
    cases = [
        (lambda ax: batchnorm.plot_layer(bn["accuracy"].sel(layer=layer), sweep.sel(layer=layer),
                                         1 / int(study["batchnorm"].attrs.get("classes", 10)), ax=ax),
         figures["fig11"].axes[0]),
        (lambda ax: removal.plot_grid(rm, ax=ax), figures["removal"].axes[0]),
        (lambda ax: removal.plot_layer(rm.sel(layer=first), removal.vs_filtering(
            study["removal"], responses, MODEL, DATASET).sel(layer=first), "h1",
            1 / int(study["removal"].attrs.get("classes", 10)), ax=ax), figures["removal"].axes[1]),
        (lambda ax: depth.plot_perturbation(sub, t, "gaussian", ax=ax), figures["depth"].axes[1]),
        (lambda ax: depth.plot_global(t, ax=ax), figures["depth"].axes[2]),
        (lambda ax: depth.plot_positions(sub, ax=ax), figures["depth"].axes[3]),
        (lambda ax: neurons.plot_drops(rk, ax=ax), figures["neurons"].axes[0]),
        (lambda ax: neurons.plot_effects(rk, ax=ax), figures["neurons"].axes[1]),
        (lambda ax: neurons.plot_defense(neurons.defense(study["neurons"], MODEL, DATASET), ax=ax),
         figures["neurons"].axes[2]),
        (lambda ax: conventions.plot_readings(readings, "r_xe", ax=ax), figures["conventions"].axes[1]),
        (lambda ax: selective.plot_gains(sel, ax=ax), figures["fig12"].axes[1]),
    ]
    for draw_it, expected in cases:
        ax = Figure().subplots()
        draw_it(ax)
        shown = drawn(ax)
        assert shown["lines"] or shown["images"] or shown["bars"] or shown["areas"]
        same(shown, drawn(expected))
