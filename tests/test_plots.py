"""The figures of the book on a small stored results folder, the BatchNorm step of Fig. 11, and Fig. 12 and the
related studies on small stored study folders."""
import numpy as np
import pytest
import torch
import xarray as xr
from matplotlib.figure import Figure
from torch.utils.data import TensorDataset

import fragility as fr
from fragility import FragilityError, batchnorm, models, neurons, plots, selective, store, training, widgets

A = 3
EPOCHS = (1, 2)
SEEDS = (0, 1)


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
def ds(trained_cnn, digits, tmp_path_factory):
    """Stored results: smallcnn on digits, 2 seeds × 2 epochs, and one unit of a model "other" with other layers."""
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
    return store.open_results(folder)


LAYERS = ["blocks.0.conv", "blocks.1.conv", "fc", "global"]


def test_check_parameters_defaults_and_one_clear_message(ds):
    p = plots.check_parameters(ds, model=None, dataset=None, layer=None, epoch=None, seed=None, filter=None)
    assert p == dict(model="other", dataset="digits", layer="features.0", epoch=2, seed=None, filter="h1")
    p = plots.check_parameters(ds, model="smallcnn", layer=None, epoch=None)
    assert (p["layer"], p["epoch"]) == ("blocks.0.conv", 2)
    assert plots.choices(ds, "smallcnn")["layer"] == LAYERS
    bad = [(dict(model="smallcnn", layer="conv9"), "unknown layer 'conv9' of smallcnn: choose from "
                                                   "blocks.0.conv, blocks.1.conv, fc, global."),
           (dict(model="resnet18"), "unknown model 'resnet18' in these results: choose from other, smallcnn."),
           (dict(model="other", epoch=1), "unknown epoch 1 stored for other on digits: choose from 2."),
           (dict(model="smallcnn", seed=7), "unknown seed 7 stored for smallcnn on digits: choose from 0, 1."),
           (dict(filter="h4"), "unknown filter 'h4': choose from h1, h2, h3, combined."),
           (dict(colour="red"), "unknown parameter(s) colour")]
    for params, message in bad:
        with pytest.raises(FragilityError) as err:
            plots.check_parameters(ds, **params)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_provenance_line(ds):
    sub = ds.sel(model=["smallcnn"])
    line = plots.provenance_line(sub)
    eps = float(ds["epsilon"].sel(model="smallcnn").max())
    for part in ("profile test", "model smallcnn", "data digits", "seeds 0, 1", "n_test 40", f"A {A}",
                 f"ε {eps:g}", "attack fixed", f"commit {ds.attrs['git_commit'][:10]}"):
        assert part in line


def test_curves_average_scaled_responses_over_seeds(ds):
    c = plots.curves(ds, "smallcnn", "digits")
    sub = ds.sel(model="smallcnn", dataset="digits", layer=LAYERS)
    per_seed = fr.scaled(sub)
    np.testing.assert_allclose(c["response"].sel(filter="h2"), per_seed.sel(filter="h2").mean("seed"))
    np.testing.assert_allclose(c["response"].sel(filter="combined"), fr.combined(sub).mean("seed"))
    one = plots.curves(ds, "smallcnn", "digits", seed=1)
    np.testing.assert_allclose(one["response"].sel(filter="h1"), per_seed.sel(filter="h1", seed=1))


FIGURES = [plots.fig04_baseline, plots.fig05_targeted, plots.fig06_filters, plots.fig07_landscape,
           plots.fig08_scores, plots.fig09_global, plots.fig10_local, plots.fig11_batchnorm]


@pytest.mark.parametrize("fn", FIGURES, ids=lambda f: f.__name__)
def test_every_figure_has_its_provenance_line(ds, fn):
    fig = fn(ds, model="smallcnn") if "model" in fn.__code__.co_varnames else fn(ds)
    assert isinstance(fig, Figure)
    line = next(t.get_text() for t in fig.texts if t.get_text().startswith("profile test · model "))
    assert "smallcnn" in line.split(" · ")[1] and "n_test 40" in line
    assert fig.get_suptitle().startswith(f"Fig. {int(fn.__name__[3:5])} ")


def test_fig04_baseline_and_scaled_response(ds):
    fig = plots.fig04_baseline(ds, model="smallcnn", layer="fc")
    ax, bx, twin = fig.axes
    c = plots.curves(ds, "smallcnn", "digits").sel(layer="fc", epoch=2, filter="h1")
    np.testing.assert_allclose(ax.lines[0].get_ydata(), c["baseline"])
    np.testing.assert_allclose(twin.lines[0].get_ydata(), c["n_filtered"])
    assert twin.lines[1].get_ydata()[0] == c["n_params"]  # the layer's size, as a dot
    assert ax.get_xlabel() == bx.get_xlabel() == r"normalized threshold $\alpha$"
    np.testing.assert_allclose(bx.lines[2].get_ydata(), c["response"].sel(input="clean"))
    r = plots.unit_scores(ds, "smallcnn", "digits")["r_x"].sel(layer="fc", epoch=2)
    assert f"{float(r):+.3f}" in bx.get_title()


def test_fig05_images_are_epochs_by_thresholds(ds):
    fig = plots.fig05_targeted(ds, model="smallcnn", layer="blocks.1.conv", seed=0)
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert [im.shape for im in images] == [(len(EPOCHS), A + 1)] * 3
    np.testing.assert_allclose(images[2], images[0] - images[1])
    c = plots.curves(ds, "smallcnn", "digits", seed=0).sel(layer="blocks.1.conv", filter="combined")
    np.testing.assert_allclose(images[0], c["response"].sel(input="clean").transpose("epoch", "alpha"))


def test_fig06_a_line_per_epoch_per_filter(ds):
    fig = plots.fig06_filters(ds, model="smallcnn", layer="blocks.0.conv")
    panels = [ax for ax in fig.axes if ax.lines]
    assert [ax.get_title().split()[0] for ax in panels] == ["h1", "h2", "h3", "combined"]
    assert all(len(ax.lines) == len(EPOCHS) for ax in panels)


def test_fig07_local_and_global_images(ds):
    fig = plots.fig07_landscape(ds, model="smallcnn")
    local, glob = (ax.images[0].get_array() for ax in fig.axes if ax.images)
    assert local.shape == (3, A + 1) and glob.shape == (len(EPOCHS), A + 1)


def test_fig08_areas_carry_the_scores(ds):
    fig = plots.fig08_scores(ds, model="smallcnn", layer="fc", epoch=1)
    r = plots.unit_scores(ds, "smallcnn", "digits").sel(layer="fc", epoch=1)
    titles = [ax.get_title() for ax in fig.axes]
    for key, title in (("r_x", titles[0]), ("r_e", titles[1]), ("r_xe", titles[2]), ("r_e", titles[3])):
        assert f"{float(r[key]):+.3f} ({fr.characterize(r[key]).item()})" in title


def test_fig09_a_row_per_model(ds):
    fig = plots.fig09_global(ds)
    assert len(fig.axes) == 2 * 3
    ax = fig.axes[3]  # smallcnn, r_x
    r = plots.unit_scores(ds, "smallcnn", filter="h1", mean=False)["r_x"].sel(layer="global", dataset="digits")
    np.testing.assert_allclose(ax.lines[0].get_ydata(), r.mean("seed"))


def test_fig10_cells_are_labelled_by_characterize(ds):
    fig = plots.fig10_local(ds, model="smallcnn")
    r = plots.unit_scores(ds, "smallcnn").drop_sel(layer="global").sel(dataset="digits")
    shown = fr.display_normalize(r)
    for ax, key in zip(fig.axes, ("r_x", "r_xe", "r_e")):
        image = ax.images[0].get_array()
        assert image.shape == (3, len(EPOCHS))
        np.testing.assert_allclose(image, shown[key].transpose("layer", "epoch"))
        assert np.nanmax(np.abs(image)) <= 0.5 + 1e-12
        labels = fr.characterize(r[key]).transpose("layer", "epoch").values
        assert [t.get_text() for t in ax.texts] == labels.ravel().tolist()


def test_fig11_layers_and_batchnorm_markers(ds):
    retention = plots.retention(ds, "smallcnn")
    assert list(retention["layer"].values) == LAYERS[:3]
    assert plots.kept_layers(ds, "smallcnn", threshold=np.inf) == []
    removal = xr.Dataset({"accuracy": (("layer", "statistics"), [[0.5, 0.2, 0.1]])},
                         coords={"layer": ["blocks.1.conv"], "statistics": list(batchnorm.STATISTICS)})
    fig = plots.fig11_batchnorm(ds, model="smallcnn", layers=["blocks.1.conv", "fc"], removal=removal)
    assert [ax.get_title() for ax in fig.axes] == ["blocks.1.conv", "fc"]
    assert [line.get_ydata()[0] for line in fig.axes[0].lines[-3:]] == [0.5, 0.2, 0.1]
    with pytest.raises(FragilityError, match="unknown layer 'bn'"):
        plots.fig11_batchnorm(ds, model="smallcnn", layers=["bn"])


def test_widgets_draw_the_static_figure_outside_a_live_kernel(ds, monkeypatch):
    monkeypatch.setenv(widgets.STATIC, "1")
    assert not widgets.live()
    fig = widgets.interactive_figure(plots.fig06_filters, ds, model="smallcnn", layer="fc")
    assert isinstance(fig, Figure) and "layer fc" in fig.get_suptitle()


def test_batchnorm_reestimation_changes_statistics_and_restores_the_model(trained_cnn, digits):
    model = trained_cnn
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_train, x, y = digits[0][:200], digits[2][:100], digits[3][:100]
    assert batchnorm.following_batchnorm(model, "blocks.1.conv", x) == "blocks.1.bn"
    assert batchnorm.following_batchnorm(model, "fc", x) is None
    with batchnorm.removed(model, "blocks.0.conv", x_train) as names:
        assert names == ["blocks.0.bn"]
        assert not model.training and not model.blocks[0].conv.weight.any()
        # the zero map has mean 0 and variance 0 once re-estimated; the next BatchNorm is untouched
        assert float(model.blocks[0].bn.running_mean.abs().max()) == 0
        assert not torch.equal(model.blocks[0].bn.running_var, before["blocks.0.bn.running_var"])
        assert torch.equal(model.blocks[1].bn.running_mean, before["blocks.1.bn.running_mean"])
    with batchnorm.removed(model, "blocks.0.conv", x_train, scope="all") as names:
        assert names == ["blocks.0.bn", "blocks.1.bn"]
        assert not torch.equal(model.blocks[1].bn.running_mean, before["blocks.1.bn.running_mean"])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and model.blocks[0].bn.momentum == 0.1
    result = batchnorm.remove_layers(model, ["blocks.0.conv", "fc"], x, y, x_train)
    assert result["accuracy"].shape == (2, 3) and list(result["batchnorm"].values) == ["blocks.0.bn", ""]
    assert np.isnan(result["accuracy"].sel(layer="fc", statistics="following re-estimated"))
    assert float(result["intact_accuracy"]) == fr.attacks.accuracy(model, x, y)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# Fig. 12 and the related studies: units stored as the pipeline stores them, results/studies/<study>/<unit>.nc

MAGNITUDES = [0.0, 0.05, 0.1, 0.2]


def save_study(folder, study, unit, model, dataset, seed, **attrs):
    """Store one study unit at <folder>/studies/<study>/<model>__<dataset>__seed<seed>.nc, with its scalar keys."""
    path = folder / "studies" / study / f"{model}__{dataset}__seed{seed}.nc"
    path.parent.mkdir(parents=True, exist_ok=True)
    unit = unit.assign_coords(model=model, dataset=dataset, seed=np.int64(seed))
    unit.attrs.update(attrs, schema=fr.studies.SCHEMA)
    unit.to_netcdf(path, engine="h5netcdf")


def neurons_unit(net, x, y, epsilon):
    """The neurons study's unit: nodal dropout merged with the defense, whose variables get the prefix defense_."""
    dropout = neurons.nodal_dropout(net, x, y, epsilon=epsilon, progress=False)
    defense = neurons.defend(net, x, y, dropout)
    return xr.merge([dropout, defense.rename({n: f"defense_{n}" for n in defense.data_vars})], join="outer",
                    combine_attrs="override")


def combine(units):
    """Units combined along model, dataset and seed, outer join, as `studies.open_study` combines them."""
    stacked = xr.concat(units, dim="unit", data_vars="all", coords="all", join="outer", fill_value=np.nan,
                        combine_attrs="drop_conflicts")
    return stacked.set_index(unit=["model", "dataset", "seed"]).unstack("unit")


def open_study(folder, study):
    """The stored units of `study`, combined by the library."""
    return fr.studies.open_study(folder, study)


def trained(depth, x, y, seed):
    """A smallcnn of `depth` blocks trained briefly on (x, y), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    model = models.build("smallcnn", 1, 10, seed=seed, depth=depth)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for idx in torch.randperm(len(x), generator=gen).split(50):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def studies(ds, trained_cnn, digits, tmp_path_factory):
    """The four studies of smallcnn on digits, seeds 0 and 1, from the networks of the `ds` fixture's epoch 2."""
    folder = tmp_path_factory.mktemp("studies")
    x_train, y_train = digits[0][:300], digits[1][:300]
    x, y = digits[2][:40], digits[3][:40]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seed in SEEDS:
            net = perturbed(trained_cnn, 10 * seed + 2)  # the network of the stored epoch-2 sweep
            save_study(folder, "neurons", neurons_unit(net, x, y, 0.1), "smallcnn", "digits", seed, profile="test")
            removal = fr.removal.random_removal(net, x, y, p=[0, 0.25, 0.5, 0.75, 1], draws=3, seed=seed,
                                                epsilon=0.1, progress=False)
            save_study(folder, "removal", removal, "smallcnn", "digits", seed, profile="test")
            for depth, model in ((1, trained(1, x_train, y_train, seed)), (2, net)):
                profile = fr.depth.depth_profile(model, x, y, magnitudes=MAGNITUDES, seed=seed, A=A, epsilon=0.1,
                                                 progress=False)
                save_study(folder, "depth", profile, f"smallcnn-d{depth}", "digits", seed, profile="test")
            config = training.TrainConfig(model="smallcnn", dataset="digits", seed=seed, epochs=1, every=1,
                                          batch_size=50, lr=3e-3)
            train_set, test_set = TensorDataset(x_train, y_train), TensorDataset(x, y)
            start = training.train(config, train_set, test_set, folder / "run", progress=False)[-1]
            unit = selective.selective_backprop(start, train_set, test_set, folder / "continued" / str(seed), 2,
                                                x=x, y=y, A=A, epsilon=0.1, epsilons=4, progress=False)
            save_study(folder, "selective", unit, "smallcnn", "digits", seed, profile="test")
    finally:
        torch.set_num_threads(threads)
    return {name: open_study(folder, name) for name in ("selective", "neurons", "removal", "depth")}


def foot(fig) -> str:
    return next(t.get_text() for t in fig.texts if t.get_text().startswith("profile test · model "))


def test_study_selections_are_checked_with_one_clear_message(ds, studies):
    assert plots.study_kind(ds) is None
    assert {k: plots.study_kind(v) for k, v in studies.items()} == {k: k for k in studies}
    assert plots.choices(studies["removal"]) == dict(model=["smallcnn"], dataset=["digits"], seed=[0, 1],
                                                     layer=LAYERS[:3], input=["clean", "adversarial"],
                                                     filter=["h1", "h2"])
    assert plots.choices(studies["depth"])["model"] == ["smallcnn-d1", "smallcnn-d2"]
    p = plots.check_parameters(studies["removal"], model=None, layer=None, input=None, seed=None)
    assert p == dict(model="smallcnn", dataset="digits", layer="blocks.0.conv", input="clean", seed=None)
    bad = [("removal", dict(layer="global"), "unknown layer 'global' of smallcnn: choose from blocks.0.conv, "
                                             "blocks.1.conv, fc."),
           ("neurons", dict(layer="fc"), "unknown parameter(s) layer: the neurons study's figures take model, "
                                         "dataset, seed, input."),
           ("selective", dict(seed=7), "unknown seed 7 stored for smallcnn on digits: choose from 0, 1."),
           ("depth", dict(model="resnet18"), "unknown model 'resnet18' in these results: choose from smallcnn-d1, "
                                             "smallcnn-d2."),
           ("neurons", dict(input="fixed"), "unknown input 'fixed': choose from clean, adversarial."),
           ("removal", dict(filter="h3"), "unknown filter 'h3': choose from h1, h2.")]
    for study, params, message in bad:
        with pytest.raises(FragilityError) as err:
            plots.check_parameters(studies[study], **params)
        assert str(err.value) == message
    with pytest.raises(FragilityError, match=r"^unknown model 'x' in the depth study on digits: choose from "):
        plots.study_depth(studies["depth"], models=["x"])


STUDY_FIGURES = [(plots.fig12_selective, "selective", "Fig. 12 · smallcnn"),
                 (plots.study_neurons, "neurons", "Nodal dropout (seed 002) · smallcnn on digits"),
                 (plots.study_removal, "removal", "Random weight removal (seed 003) · smallcnn on digits"),
                 (plots.study_depth, "depth", "Fragility against depth (seed 004) · digits")]


@pytest.mark.parametrize("fn, study, title", STUDY_FIGURES, ids=lambda v: getattr(v, "__name__", None))
def test_every_study_figure_has_its_provenance_line(studies, fn, study, title):
    fig = fn(studies[study])
    assert isinstance(fig, Figure) and fig.get_suptitle().startswith(title)
    line = foot(fig)
    assert "data digits · seeds 0, 1 · n_test 40" in line and "commit " in line and " ?" not in line
    assert ("A 3" in line) == (study in ("selective", "depth"))


def test_fig12_lines_are_the_mean_over_seeds(studies):
    sel = studies["selective"]
    fig = plots.fig12_selective(sel)
    (ax,) = fig.axes
    epochs = sel["epoch"].values.tolist()
    assert epochs == [2, 3] and len(ax.lines) == 2 * len(epochs) + 1
    acc = sel["accuracy"].sel(model="smallcnn", dataset="digits")
    np.testing.assert_allclose(ax.lines[0].get_ydata(), acc.sel(training="selective", epoch=2).mean("seed"))
    np.testing.assert_allclose(ax.lines[3].get_ydata(), acc.sel(training="regular", epoch=3).mean("seed"))
    np.testing.assert_allclose(ax.lines[0].get_xdata(), np.linspace(0, 0.1, 4))
    assert ax.get_title().startswith("digits: frozen ")
    gain = (acc.sel(training="selective") - acc.sel(training="regular")).sel(epsilon=slice(1e-9, None))
    text = plots.fig12_summary(sel)
    assert f"overall **{float(gain.mean()):+.3f}**" in text and "Verdict: " in text
    one = plots.fig12_selective(sel, seed=1).axes[0]
    np.testing.assert_allclose(one.lines[0].get_ydata(), acc.sel(training="selective", epoch=2, seed=1))


def test_selective_curves_put_differing_epsilon_grids_on_a_relative_scale(studies):
    sel = studies["selective"].sel(model="smallcnn", dataset="digits")
    units = [sel.sel(seed=0), sel.sel(seed=1).assign_coords(epsilon=2 * sel["epsilon"].values)]
    c = plots.selective_curves(combine(units))
    assert c.attrs["relative"] == 1 and c["epsilon_max"].values.tolist() == [0.1, 0.2]
    np.testing.assert_allclose(c["epsilon"], np.linspace(0, 1, 4))
    np.testing.assert_allclose(c["accuracy"].sel(seed=1), sel["accuracy"].sel(seed=1).transpose(*c["accuracy"].sel(
        seed=1).dims))
    assert plots.selective_curves(studies["selective"]).attrs["relative"] == 0


def test_neurons_bars_follow_the_fragility_order(studies):
    neu = studies["neurons"]
    fig = plots.study_neurons(neu, seed=1)
    ax, bx, cx = fig.axes
    unit = neu.sel(model="smallcnn", dataset="digits", seed=1)
    r = neurons.rank_neurons(unit.sel(input=["clean", "adversarial"]))
    order = np.argsort(r["rank"].values, kind="stable")
    heights = [patch.get_height() for patch in ax.patches]
    n = unit.sizes["neuron"]
    np.testing.assert_allclose(heights[:n], -r["change"].sel(input="clean").values[order])
    np.testing.assert_allclose(heights[n:2 * n], -r["change"].sel(input="adversarial").values[order])
    assert f"ρ = {float(r['correlation']):+.2f}" in bx.get_legend().get_texts()[0].get_text()
    defense = unit["defense_accuracy"].dropna("input", how="all")
    bars = [patch.get_height() for patch in cx.patches]
    np.testing.assert_allclose(bars, defense.sel(input=["clean", "adversarial", "fixed"]).values.ravel())
    text = plots.neurons_summary(neu)
    assert "mean ρ = " in text and "Defense, accuracy before → after: clean: " in text


def test_removal_beside_filtering(ds, studies):
    rem = studies["removal"]
    fig = plots.study_removal(rem, results=ds, layer="fc")
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(images) == 2
    mean = rem["accuracy"].sel(model="smallcnn", dataset="digits", input="clean").mean(["seed", "draw"])
    np.testing.assert_allclose(images[0], mean.transpose("layer", "p"))
    cmp = plots.removal_vs_filtering(rem, ds)
    assert cmp.attrs["epoch"] == 2 and cmp["seed"].values.tolist() == [0, 1]
    np.testing.assert_allclose(cmp["difference"].sel(p=0), 0)  # the same networks: nothing removed, same accuracy
    np.testing.assert_allclose(images[1], cmp["difference"].mean("seed").transpose("layer", "p"))
    assert [ax.get_title() for ax in fig.axes if "(c)" in ax.get_title()] == ["(c) fc: random against h1 filtering"]
    assert len([ax for ax in plots.study_removal(rem).axes if ax.images]) == 1  # without the sweep: (a) and (b)
    text = plots.removal_summary(rem, results=ds)
    assert "| `blocks.0.conv` | 144 |" in text and "Top layers (`blocks.1.conv`, `fc`)" in text


def test_removal_tolerance():
    curves = xr.Dataset({"mean": (("layer", "p"), [[0.9, 0.85, 0.5, 0.1], [0.9, 0.9, 0.8, 0.82]]), "base": 0.9},
                        coords={"layer": ["a", "b"], "p": [0, 0.5, 0.8, 1.0]}, attrs={"chance": 0.1})
    t = plots.removal_tolerance(curves)
    assert t["tolerated"].values.tolist() == [0.5, 0.5]  # b dips below 0.81 at 0.8, then recovers: not tolerated
    np.testing.assert_allclose(t["accuracy_at"], [0.85 - 0.35 * 2 / 3, 0.9 - 0.1 * 2 / 3])
    np.testing.assert_allclose(t["above_chance_at"], (t["accuracy_at"] - 0.1) / 0.8)
    assert t["accuracy_full"].values.tolist() == [0.1, 0.82]


def test_depth_lines_per_model(studies):
    dep = studies["depth"]
    fig = plots.study_depth(dep)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["smallcnn-d1 (2 layers)", "smallcnn-d2 (3 layers)"]
    acc = dep["accuracy"].sel(dataset="digits", perturbation="fgsm")
    np.testing.assert_allclose(ax.lines[1].get_ydata(), acc.sel(model="smallcnn-d2").mean("seed"))
    t = plots.depth_table(dep)
    kept = (acc.sel(magnitude=MAGNITUDES[1:]) / dep["base_accuracy"].sel(dataset="digits")).mean("magnitude")
    np.testing.assert_allclose(t["fgsm"], kept.mean("seed").sel(model=t["model"]))
    assert plots.depth_profiles(dep, models=["smallcnn-d2"])["model"].values.tolist() == ["smallcnn-d2"]
    text = plots.depth_summary(dep)
    assert "| smallcnn-d1 | 2 |" in text and "- smallcnn (smallcnn-d1, smallcnn-d2): Spearman ρ" in text


def test_study_widgets_draw_the_static_figure(ds, studies, monkeypatch):
    monkeypatch.setenv(widgets.STATIC, "1")
    fig = widgets.interactive_figure(plots.study_removal, studies["removal"], layer="blocks.1.conv", results=ds)
    assert isinstance(fig, Figure) and "(c) blocks.1.conv" in " ".join(ax.get_title() for ax in fig.axes)


@pytest.mark.parametrize("fn, study, title", STUDY_FIGURES, ids=lambda v: getattr(v, "__name__", None))
def test_study_widgets_offer_the_study_choices_and_redraw(ds, studies, monkeypatch, fn, study, title):
    """Live (as in a Jupyter kernel), every dropdown holds the study's valid choices, and a change redraws."""
    import ipywidgets
    from IPython import display as ipy

    shown, boxes = [], []
    monkeypatch.setattr(widgets, "live", lambda: True)
    monkeypatch.setattr(ipy, "display", lambda obj, **kw: (boxes if isinstance(obj, ipywidgets.HBox) else shown)
                        .append(obj) or (type("Handle", (), {"update": lambda self, f: shown.append(f)})()))
    extra = {"results": ds} if study == "removal" else {}
    assert widgets.interactive_figure(fn, studies[study], **extra) is None
    controls = {w.description: w for w in boxes[0].children}
    valid = plots.choices(studies[study])
    for name, w in controls.items():
        values = [v[1] if isinstance(v, tuple) else v for v in w.options]
        assert values == ([None] if name == "seed" else []) + valid[name]
    controls["seed"].value = 1
    assert len(shown) == 2 and all(isinstance(f, Figure) for f in shown)
    assert "seed 1" in shown[-1].get_suptitle() or "seed 1" in shown[-1].axes[0].get_title()
