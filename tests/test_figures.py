"""The book's figure chapters (fragility.figures) on small stored results: what each panel draws, the provenance
line, the paper's defaults, each chapter's summary and the claims it decides; and (slow) the figures of Fig. 11,
Fig. 12 and the related studies on a tiny pipeline run."""
import inspect

import numpy as np
import pytest
import torch
import xarray as xr
from matplotlib.figure import Figure

import fragility as fr
from fragility import FragilityError, models, store, verdicts
from fragility.chapters import CHAPTERS
from fragility.figures import (
    fig04_baseline,
    fig05_targeted,
    fig06_filters,
    fig07_landscape,
    fig08_scores,
    fig09_global,
    fig10_local,
)
from fragility.plot import draw
from fragility.selection import check_parameters, choices, curves, layer_scores, paper_defaults
from fragility.studies.batchnorm import SURVIVES

A = 3
EPOCHS = (1, 2)
SEEDS = (0, 1)
LAYERS = ["blocks.0.conv", "blocks.1.conv", "fc", "global"]


def perturbed(model, seed):
    """A copy of `model` with its weights jittered by seeded noise: a stand-in for another seed or epoch."""
    gen = torch.Generator().manual_seed(seed)
    copy = models.build("smallcnn", 1, 10, depth=2)
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in copy.parameters():
            p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=gen))
    return copy.eval()


@pytest.fixture(scope="module")
def folder(trained_cnn, digits, tmp_path_factory):
    """A results folder: smallcnn on digits, 2 seeds × 2 epochs, and one unit of a model "other" with other layers."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("results")
    x, y = digits[2][:40], digits[3][:40]
    for seed in SEEDS:
        for epoch in EPOCHS:
            sweep = fr.sweep(perturbed(trained_cnn, 10 * seed + epoch), x, y, A=A, epsilon=0.1, progress=False)
            unit = store.as_unit(sweep, "smallcnn", "digits", seed, epoch, profile="test")
            store.write_unit(unit, store.unit_path(folder, "smallcnn", "digits", seed, epoch))
    other = sweep.isel(layer=[1, 2, 3]).assign_coords(layer=["features.0", "classifier", "global"])
    store.write_unit(store.as_unit(other, "other", "digits", 0, 2, profile="test"),
                     store.unit_path(folder, "other", "digits", 0, 2))
    return folder


@pytest.fixture(scope="module")
def ds(folder):
    """The stored results, combined."""
    return store.open_results(folder)


def foot(fig) -> str:
    return next(t.get_text() for t in fig.texts if t.get_text().startswith("profile "))


def test_selections_defaults_and_one_clear_message(ds):
    p = check_parameters(ds, model=None, dataset=None, layer=None, epoch=None, seed=None, filter=None)
    assert p == dict(model="other", dataset="digits", layer="features.0", epoch=2, seed=None, filter="h1")
    assert choices(ds, "smallcnn")["layer"] == LAYERS
    bad = [(dict(model="smallcnn", layer="conv9"), "unknown layer 'conv9' of smallcnn: choose from "
                                                   "blocks.0.conv, blocks.1.conv, fc, global."),
           (dict(model="resnet18"), "unknown model 'resnet18' in these results: choose from other, smallcnn."),
           (dict(model="other", epoch=1), "unknown epoch 1 stored for other on digits: choose from 2."),
           (dict(model="smallcnn", seed=7), "unknown seed 7 stored for smallcnn on digits: choose from 0, 1."),
           (dict(filter="h4"), "unknown filter 'h4': choose from h1, h2, h3, combined."),
           (dict(model="smallcnn", layers="fc"), "layers must be a non-empty list of layer names of smallcnn"),
           (dict(colour="red"), "unknown parameter(s) colour")]
    for params, message in bad:
        with pytest.raises(FragilityError) as err:
            check_parameters(ds, **params)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_paper_defaults_take_the_nearest_that_exists(ds):
    chosen, notes = paper_defaults(ds, dict(model="resnet18", dataset="mnist", epoch=100, layer="layer3.0.conv2"))
    assert chosen == dict(model="other", dataset="digits", epoch=2, layer="features.0")
    assert notes == ["model other (the paper: resnet18)", "dataset digits (the paper: mnist)",
                     "epoch 2 (the paper: 100)", "layer features.0 (the paper: layer3.0.conv2)"]
    chosen, notes = paper_defaults(ds, dict(model="smallcnn", epoch=1, layer="fc"))
    assert chosen == dict(model="smallcnn", epoch=1, layer="fc") and notes == []


def test_provenance_line(ds):
    line = draw.provenance_line(ds.sel(model=["smallcnn"]))
    eps = float(ds["epsilon"].sel(model="smallcnn").max())
    for part in ("profile test", "model smallcnn", "data digits", "seeds 0, 1", "n_test 40", f"A {A}",
                 f"ε {eps:g}", "attack fixed", f"commit {ds.attrs['git_commit'][:10]}"):
        assert part in line


def test_provenance_line_names_the_seeds_of_the_results_shown(ds):
    assert "seeds 0, 1 ·" in draw.provenance_line(ds)
    assert "seeds 0 ·" in draw.provenance_line(ds.sel(model=["other"]))  # smallcnn's seed 1 is not other's
    assert "seeds 0 ·" in draw.provenance_line(ds.sel(model="other"))


def test_curves_average_scaled_responses_over_seeds(ds):
    c = curves(ds, "smallcnn", "digits")
    sub = ds.sel(model="smallcnn", dataset="digits", layer=LAYERS)
    per_seed = fr.scaled(sub)
    np.testing.assert_allclose(c["response"].sel(filter="h2"), per_seed.sel(filter="h2").mean("seed"))
    np.testing.assert_allclose(c["response"].sel(filter="combined"), fr.combined(sub).mean("seed"))
    np.testing.assert_allclose(c["accuracy"].sel(filter="combined"), sub["accuracy"].mean(["seed", "filter"]))
    one = curves(ds, "smallcnn", "digits", seed=1)
    np.testing.assert_allclose(one["response"].sel(filter="h1"), per_seed.sel(filter="h1", seed=1))


FIGURES = [fig04_baseline, fig05_targeted, fig06_filters, fig07_landscape, fig08_scores, fig09_global, fig10_local]


def name(module) -> str:
    return module.__name__.rsplit(".", 1)[-1]


def test_every_figure_module_registers_its_chapter():
    for module in FIGURES:
        chapter = CHAPTERS[name(module)]
        assert chapter.figure is module.figure and chapter.summary is module.summary
        assert chapter.claims == getattr(module, "CLAIMS", ())
        assert all(c.chapter == name(module) for c in chapter.claims)
        # the chapters whose claims need the per-image results read the results folder
        assert chapter.reads_folder == (name(module) in ("fig07_landscape", "fig09_global", "fig10_local"))
    assert [c.id for c in fig07_landscape.CLAIMS] == ["P10"]
    assert [c.id for c in fig09_global.CLAIMS] == ["P1", "P2", "P2b", "P2c", "P3", "P4"]
    assert [c.id for c in fig10_local.CLAIMS] == ["P5", "P5-all", "P6", "P6b", "P6c-Ro", "P6c-rx", "P6c-rxe", "P11",
                                                  "P12"]


@pytest.mark.parametrize("module", FIGURES, ids=name)
def test_every_figure_has_its_provenance_line_and_book_width(ds, module):
    fn = module.figure
    fig = fn(ds, model="smallcnn") if "model" in inspect.signature(fn).parameters else fn(ds)
    assert isinstance(fig, Figure) and fig.get_figwidth() <= draw.WIDTH
    assert "smallcnn" in foot(fig) and "n_test 40" in foot(fig)
    assert fig.get_suptitle().startswith(f"Fig. {int(name(module)[3:5])} ")
    texts = [t for ax in fig.axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label)]
    assert min(t.get_fontsize() for t in texts if t.get_text()) >= 9  # readable at the book's width


def test_fig04_baseline_and_scaled_response(ds):
    fig = fig04_baseline.figure(ds, model="smallcnn", layer="fc")
    ax, bx, twin = fig.axes
    c = curves(ds, "smallcnn", "digits").sel(layer="fc", epoch=2, filter="h1")
    np.testing.assert_allclose(ax.lines[0].get_ydata(), c["baseline"])
    np.testing.assert_allclose(twin.lines[0].get_ydata(), c["n_filtered"])
    np.testing.assert_allclose(bx.lines[2].get_ydata(), c["response"].sel(input="clean"))
    r = layer_scores(ds, "smallcnn", "digits")["r_x"].sel(layer="fc", epoch=2)
    assert f"{float(r):+.3f}" in bx.get_title()


def test_fig05_shows_accuracy_not_scaled_responses(ds):
    fig = fig05_targeted.figure(ds, model="smallcnn", layer="blocks.1.conv", seed=0, filter="h2")
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert [im.shape for im in images] == [(len(EPOCHS), A + 1)] * 3
    sub = ds.sel(model="smallcnn", dataset="digits", seed=0, layer="blocks.1.conv", filter="h2")["accuracy"]
    np.testing.assert_allclose(images[0], sub.sel(input="clean").transpose("epoch", "alpha"))
    np.testing.assert_allclose(images[2], images[0] - images[1])


def test_fig06_in_three_rows(ds):
    fig = fig06_filters.figure(ds, model="smallcnn", layer="blocks.0.conv")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:3] == ["h1 (high-pass)", "h2 (low-pass)", "h3 (pulse wave)"]
    assert [t.split(":")[0] for t in titles[3:6]] == ["h1", "h2", "h3"] and titles[6].startswith("combined")
    c = curves(ds, "smallcnn", "digits").sel(layer="blocks.0.conv", input="clean", epoch=2)
    share = fig.axes[0].lines[0].get_ydata()
    np.testing.assert_allclose(share, c["n_filtered"].sel(filter="h1") / c["n_params"])
    assert share[-1] == 1  # h1 removes every weight at α = 1
    rows = [ax for ax in fig.axes if ax.get_title().endswith(": accuracy")]
    assert all(len(ax.lines) == len(EPOCHS) for ax in rows)


def test_fig07_local_responses_at_every_epoch(ds):
    fig = fig07_landscape.figure(ds, model="smallcnn")
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert [im.shape for im in images] == [(3, A + 1)] * len(EPOCHS) + [(len(EPOCHS), A + 1)]
    c = curves(ds, "smallcnn").sel(filter="combined", input="clean", dataset="digits")
    np.testing.assert_allclose(images[0], c["response"].sel(epoch=1).drop_sel(layer="global")
                               .transpose("layer", "alpha"))


def test_fig08_areas_carry_the_scores(ds):
    fig = fig08_scores.figure(ds, model="smallcnn", layer="fc", epoch=1)
    r = layer_scores(ds, "smallcnn", "digits").sel(layer="fc", epoch=1)
    titles = [ax.get_title() for ax in fig.axes]
    for key, title in (("r_x", titles[0]), ("r_e", titles[1]), ("r_xe", titles[2]), ("r_e", titles[3])):
        assert f"{float(r[key]):+.3f} ({fr.characterize(r[key]).item()})" in title


def test_fig09_display_normalized_a_row_per_model_lettered_as_the_paper(ds):
    fig = fig09_global.figure(ds)
    # neither model is one of the paper's (a) ResNet-18 … (d) ShuffleNet: they take the letters after them
    assert len(fig.axes) == 2 * 3 and fig.axes[0].get_title().startswith("(e) other")
    assert fig.axes[3].get_title().startswith("(f) smallcnn")
    raw = fig09_global.global_scores(ds, normalized=False)
    shown = fr.display_normalize(raw)
    np.testing.assert_allclose(fig.axes[3].lines[0].get_ydata(),
                               shown["r_x"].sel(model="smallcnn", dataset="digits").mean("seed"))
    assert max(np.abs(np.asarray(line.get_ydata())).max() for ax in fig.axes for line in ax.lines[:1]) <= 0.5 + 1e-12
    peak = max(float(abs(raw[k]).max()) for k in ("r_x", "r_xe"))
    np.testing.assert_allclose(shown["r_xe"], raw["r_xe"] / (2 * peak))  # r_x and r_xε scaled together
    fig = fig09_global.figure(ds, normalized=False)
    np.testing.assert_allclose(fig.axes[3].lines[0].get_ydata(),
                               raw["r_x"].sel(model="smallcnn", dataset="digits").mean("seed"))


def test_fig10_cells_coloured_by_label_carry_the_raw_scores(ds):
    fig = fig10_local.figure(ds, models=["smallcnn"])
    r = layer_scores(ds, "smallcnn").drop_sel(layer="global").sel(dataset="digits")
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 3
    order = {"r_x": ["Fr", "Ro", "Af"], "r_xe": ["Fr", "Ro", "Af"], "r_e": ["r_x", "Ro", "r_xε"]}
    for ax, key in zip(axes, ("r_x", "r_xe", "r_e")):
        values = r[key].transpose("layer", "epoch").values
        assert [t.get_text() for t in ax.texts] == [f"{v:+.2f}" for v in values.ravel() if np.isfinite(v)]
        labels = fr.characterize(r[key]).transpose("layer", "epoch").values
        if key == "r_e":  # which response is greater, as Eq. 16 prints r_ε: r_ε < −τ is the clean one (r_x)
            labels = np.vectorize(fig10_local.GREATER.get, otypes=[object])(labels)
        np.testing.assert_array_equal(ax.images[0].get_array(),
                                      np.vectorize(order[key].index, otypes=[float])(labels))
        # the paper's colours: Fr (and r_x-marked) red, Ro green, Af (and r_xε-marked) blue
        assert list(ax.images[0].get_cmap().colors) == ["#d62728", "#2ca02c", "#1f77b4"]
    full = fig10_local.figure(ds)
    assert [sf._suptitle.get_text() for sf in full.subfigs] == ["(e) other", "(f) smallcnn"]


def test_summaries_follow_the_claims_rules(ds):
    # P5 is about the paper's four networks: smallcnn's first layer gets its scores and no verdict; under a name of
    # the paper's (resnet18) the same results get the rule of P5 on the first layer, and none on a middle one
    text = fig08_scores.summary(ds, model="smallcnn", layer="blocks.0.conv", epoch=2)
    assert "r_x = " in text and "claim P5" not in text
    named = ds.assign_coords(model=[{"smallcnn": "resnet18"}.get(m, m) for m in ds["model"].values.tolist()])
    text = fig08_scores.summary(named, model="resnet18", layer="blocks.0.conv", epoch=2)
    r = layer_scores(named, "resnet18", "digits").sel(layer="blocks.0.conv", epoch=2)
    assert f"r_x = {float(r['r_x']):+.3f}" in text and f"r_xε = {float(r['r_xe']):+.3f}" in text
    fragile = float(r["r_x"]) < -0.02 and float(r["r_xe"]) < -0.02
    assert ("**as claimed**" if fragile else "**not here**") in text  # the rule of P5 on the first layer
    assert "claim P5" not in fig08_scores.summary(named, model="resnet18", layer="blocks.1.conv", epoch=2)  # inside
    text = fig04_baseline.summary(ds, model="smallcnn", layer="fc", input="adversarial")
    value = float(layer_scores(ds, "smallcnn", "digits")["r_xe"].sel(layer="fc", epoch=2))
    assert f"r_xe = {value:+.3f}" in text
    assert f"**{verdicts.WORDS[fr.characterize(xr.DataArray(value)).item()]}**" in text


def test_fig05_summary_applies_the_survival_rule_of_p7(ds):
    text = fig05_targeted.summary(ds, model="smallcnn", layer="fc", filter="h1")
    sub = ds.sel(model="smallcnn", dataset="digits", layer="fc", filter="h1", input="clean")
    full = sub["accuracy"].isel(alpha=-1).mean("seed")  # every weight removed, per epoch
    chance = float(sub["chance"].mean())
    kept = (full - chance) / (sub["base_accuracy"].mean("seed") - chance)
    assert ", ".join(f"{float(k):.0%}" for k in kept.values) + " of the above-chance accuracy" in text
    assert ("**survives**" if float(kept.mean()) >= SURVIVES else "**does not survive**") in text


def test_fig06_summary_the_largest_share_removed_with_the_response_kept(ds):
    text = fig06_filters.summary(ds, model="smallcnn", layer="blocks.1.conv")
    c = curves(ds, "smallcnn", "digits").sel(layer="blocks.1.conv", input="clean", epoch=2)
    for h in ("h1", "h2", "h3"):
        ok = c["response"].sel(filter=h).values >= 0.98
        shares = (c["n_filtered"].sel(filter=h) / c["n_params"]).values[ok]
        assert (f"{h} {shares.max():.0%}" if ok.any() else f"{h} none") in text


def test_chapters_that_read_the_folder_name_what_would_decide_the_paper_panels(folder):
    """Neither stored model is one of the paper's: every panel of Fig. 9's claims is untestable, and its row says
    which profile would decide it."""
    text = fig09_global.summary(folder)
    lines = text.splitlines()
    expected = [(c.id, p.label) for c in fig09_global.CLAIMS for p in c.panels]
    assert len(lines) == len(expected)
    for line, (claim, panel) in zip(lines, expected):
        assert line.startswith(f"- **{claim}** {panel} — **untestable**: needs "), line
    assert "- **P2** 9a MNIST — **untestable**: needs resnet18 on mnist: the reference (or mnist) profile" in text
    assert "9a CIFAR10 vs ImageNet Tiny" in text  # P1 compares two data sets


@pytest.fixture(scope="module")
def as_resnet(folder, tmp_path_factory):
    """The smallcnn units stored again as ResNet-18 on MNIST, a panel of the paper's claims."""
    out = tmp_path_factory.mktemp("as-resnet")
    for seed in SEEDS:
        for epoch in EPOCHS:
            unit = store.read_unit(store.unit_path(folder, "smallcnn", "digits", seed, epoch))
            unit = unit.assign_coords(model="resnet18", dataset="mnist")
            store.write_unit(unit, store.unit_path(out, "resnet18", "mnist", seed, epoch))
    return out


def test_fig07_decides_p10_on_the_local_sweeps(as_resnet):
    ds = store.open_results(as_resnet).sel(model="resnet18", dataset="mnist", epoch=EPOCHS[-1]).load()
    ds = ds.drop_sel(layer="global")
    # the largest share of each layer any filter removes with β̄ and β̄_ε both ≥ 0.98 (mean over seeds), weighted
    # by the layers' sizes
    beta = (ds["accuracy"] / ds["base_accuracy"]).mean("seed")
    ok = (beta >= 0.98).all("input")
    share = (ds["n_filtered"] / ds["n_params"]).mean("seed").where(ok).max(["filter", "alpha"]).fillna(0.0)
    n = ds["n_params"].mean("seed")
    expected = float((share * n).sum() / n.sum())
    found = verdicts.decision(fig07_landscape.CLAIMS[0], verdicts.Evidence(as_resnet, samples=50),
                              verdicts.Panel("", "resnet18", "mnist"))
    assert found.value == pytest.approx(expected, abs=1e-6)
    assert found.low <= found.value + 1e-9 and found.value <= found.high + 1e-9
    assert found.verdict == verdicts.decide(found.low, found.high, fig07_landscape.REMOVED, True)
    assert f"weighted by the layers' sizes, {expected:.1%} [" in found.evidence
    text = fig07_landscape.summary(as_resnet)
    assert f"- **P10** resnet18 MNIST — **{found.verdict}**: " in text
    assert text.count("**untestable**") == len(fig07_landscape.CLAIMS[0].panels) - 1  # the other panels


def test_every_chapter_is_registered_with_its_notebook():
    from pathlib import Path

    notebooks = {p.stem for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")}
    assert notebooks == set(CHAPTERS)


SUMMARIES = {"fig11_batchnorm": "Rule of claim P7", "fig12_selective": "**smallcnn on digits**",
             "study_neurons": "Spearman ρ (fragility, attack effect)",
             "study_removal": "| layer | weights | accuracy at p = 0.7 | at p = 1 |",
             "study_depth": "| smallcnn-d1 | 2 |",
             "study_conventions": "the two readings agree"}


def test_every_study_chapter_is_summarized_below():
    assert set(SUMMARIES) == {n for n, c in CHAPTERS.items() if c.study}


@pytest.mark.slow
@pytest.mark.parametrize("chapter", sorted(SUMMARIES))
def test_study_chapters_draw_and_summarize(tiny_run, chapter):
    from fragility import book

    _, results = tiny_run
    page = book.load(chapter, results, "tiny")
    assert not page.missing
    fig = page.call(page.chapter.figure)
    assert isinstance(fig, Figure) and fig.get_figwidth() <= draw.WIDTH and "profile tiny" in foot(fig)
    text = page.call(page.chapter.summary)
    assert isinstance(text, str) and SUMMARIES[chapter] in text


@pytest.mark.slow
def test_fig12_draws_every_reading_against_regular_training(tiny_run):
    _, results = tiny_run
    study = fr.open_study(results, "selective")
    fig = CHAPTERS["fig12_selective"].figure(study)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels[-2] == "regular (the original run)" and labels[-1] == "starting checkpoint"
    assert {label.split()[0] for label in labels[:-2]} == {"prose", "equation", "random"}
    # below: each reading's gain over regular training, raw and relative
    gains = [line.get_label() for line in fig.axes[len(fig.axes) // 2].lines]
    assert {g for g in gains if not g.startswith("_")} == {f"{t}, {k}" for t in ("prose", "equation", "random")
                                                           for k in ("raw", "relative")}
