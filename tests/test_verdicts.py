"""The claims' rules on hand-made results where each verdict is known (fragility.verdicts, `fr.claims`)."""
import numpy as np
import pytest
import xarray as xr

import fragility as fr
from fragility import store, verdicts

A = 4
ALPHA = np.arange(A + 1) / A
BASE = {"clean": 0.9, "adversarial": 0.45}
AF, RO, FR = 0.08, 0.0, -0.08  # offsets of β̄ above the baseline: r = offset · (A + 1) / A


def unit(offsets: dict, adversarial: dict | None = None, glob=(RO, RO)) -> xr.Dataset:
    """A sweep whose scaled responses sit `offset` above the baseline φ̄ = 1 − α for every filter: r_x = 1.25 ·
    offset (clean), r_xε likewise from `adversarial` (default the same), r_ε their difference."""
    layers = list(offsets) + ["global"]
    adversarial = {**offsets, **(adversarial or {})}
    clean_off = [offsets[n] for n in offsets] + [glob[0]]
    adv_off = [adversarial[n] for n in offsets] + [glob[1]]
    n_params = np.full(len(layers), 100, dtype=np.int64)
    n_filtered = np.broadcast_to((ALPHA * 100).astype(np.int64), (len(layers), 3, A + 1)).copy()
    phi = 1 - ALPHA
    acc = np.stack([np.clip(np.add.outer(off, phi) * BASE[i], 0, 1)
                    for i, off in (("clean", clean_off), ("adversarial", adv_off))], -1)
    acc = np.broadcast_to(acc[:, None], (len(layers), 3, A + 1, 2)).copy()
    ds = xr.Dataset({"accuracy": (("layer", "filter", "alpha", "input"), acc),
                     "n_filtered": (("layer", "filter", "alpha"), n_filtered), "n_params": (("layer",), n_params),
                     "threshold": (("layer", "filter", "alpha"), np.zeros(n_filtered.shape)),
                     "base_accuracy": (("input",), [BASE["clean"], BASE["adversarial"]]), "epsilon": ((), 0.1)},
                    coords={"layer": layers, "filter": ["h1", "h2", "h3"], "alpha": ALPHA,
                            "input": ["clean", "adversarial"]}, attrs={"A": A, "attack": "fixed", "n_test": 100})
    return ds


def results(tmp_path, units: dict):
    """Store {(model, dataset, seed, epoch): sweep} as a results folder."""
    for (model, dataset, seed, epoch), ds in units.items():
        store.write_unit(store.as_unit(ds, model, dataset, seed, epoch, profile="test"),
                         store.unit_path(tmp_path, model, dataset, seed, epoch))
    return tmp_path


def verdict(table, claim) -> str:
    return table.set_index("id").loc[claim, "verdict"]


def test_hand_made_scores_are_what_they_were_made_to_be(tmp_path):
    ds = store.open_results(results(tmp_path, {("m", "digits", 0, 1): unit({"conv": FR, "mid": RO, "fc": AF})}))
    r = fr.scores(ds).sel(model="m", dataset="digits", seed=0, epoch=1)
    # A + 1 terms of width 1/A; a negative offset is clipped to accuracy 0 at α = 1, leaving A terms
    np.testing.assert_allclose(r["r_x"].sel(layer=["conv", "mid", "fc"]), [FR, 0, AF * (A + 1) / A], atol=1e-9)
    assert fr.characterize(r["r_x"]).sel(layer=["conv", "mid", "fc"]).values.tolist() == ["Fr", "Ro", "Af"]


@pytest.mark.parametrize("last, expected", [(FR, "holds"), (AF, "differs")])
def test_p5_first_and_last_layers_fragile(tmp_path, last, expected):
    folder = results(tmp_path, {("m", "digits", s, e): unit({"conv": FR, "mid": AF, "fc": last})
                                for s in (0, 1) for e in (1, 2)})
    table = fr.claims(folder)
    assert verdict(table, "P5") == expected
    assert table.set_index("id").loc["P5", "code_reading"] == ""  # no conventions study stored


@pytest.mark.parametrize("layers, expected", [({"conv": FR, "mid": RO, "fc": AF}, "holds"),
                                              ({"conv": FR, "mid": FR, "fc": FR}, "differs")])
def test_p6_robust_and_antifragile_layers_exist(tmp_path, layers, expected):
    assert verdict(fr.claims(results(tmp_path, {("m", "digits", 0, 1): unit(layers)})), "P6") == expected


@pytest.mark.parametrize("dataset, glob, expected", [("digits", (RO, FR), "holds"), ("digits", (RO, AF), "differs"),
                                                     ("cifar10", (RO, FR), "untestable")])
def test_p2_clean_above_adversarial_on_mnist_or_digits(tmp_path, dataset, glob, expected):
    folder = results(tmp_path, {("m", dataset, 0, e): unit({"conv": FR, "fc": FR}, glob=glob) for e in (1, 2)})
    assert verdict(fr.claims(folder), "P2") == expected


@pytest.mark.parametrize("second, expected", [(None, "untestable"), (FR, "holds"), (AF, "differs")])
def test_p1_invariance_across_datasets(tmp_path, second, expected):
    units = {("resnet18", "mnist", 0, e): unit({"conv": FR, "fc": FR}, glob=(FR, FR)) for e in (1, 2)}
    if second is not None:
        units.update({("resnet18", "cifar10", 0, e): unit({"conv": FR, "fc": FR}, glob=(second, second))
                      for e in (1, 2)})
    assert verdict(fr.claims(results(tmp_path, units)), "P1") == expected


def test_p3_p4_need_tiny_imagenet(tmp_path):
    table = fr.claims(results(tmp_path, {("squeezenet1_1", "digits", 0, 1): unit({"conv": FR, "fc": FR})}))
    for claim in ("P3", "P4"):
        row = table.set_index("id").loc[claim]
        assert row["verdict"] == "untestable" and "tinyimagenet" in row["evidence"]


@pytest.mark.parametrize("late, expected", [(RO, "holds"), (AF, "differs")])
def test_p4_squeezenet_scores_converge_to_zero(tmp_path, late, expected):
    units = {("squeezenet1_1", "tiny-imagenet", 0, e): unit({"conv": FR, "fc": FR}, glob=(g, g))
             for e, g in ((1, FR), (2, late), (3, late), (4, late))}
    assert verdict(fr.claims(results(tmp_path, units)), "P4") == expected


@pytest.mark.parametrize("first, last, expected", [(FR, AF, "holds"), (AF, AF, "differs")])
def test_p3_shufflenet_from_fragile_to_antifragile(tmp_path, first, last, expected):
    units = {("shufflenet_v2_x1_0", "tiny-imagenet", 0, 1): unit({"conv": FR, "fc": FR}, glob=(first, first)),
             ("shufflenet_v2_x1_0", "tiny-imagenet", 0, 2): unit({"conv": FR, "fc": FR}, glob=(last, last))}
    assert verdict(fr.claims(results(tmp_path, units)), "P3") == expected


@pytest.mark.parametrize("other, expected", [(FR, "holds"), (AF, "differs")])
def test_p11_edge_layers_agree_across_architectures(tmp_path, other, expected):
    folder = results(tmp_path, {("a", "digits", 0, 1): unit({"conv": FR, "fc": AF}),
                                ("b", "digits", 0, 1): unit({"first": other, "last": AF})})
    assert verdict(fr.claims(folder), "P11") == expected


@pytest.mark.parametrize("middle, expected", [(FR, "holds"), (RO, "differs")])
def test_p12_periodic_robustness(tmp_path, middle, expected):
    folder = results(tmp_path, {("m", "digits", 0, e): unit({"conv": FR, "mid": label, "fc": FR})
                                for e, label in ((1, RO), (2, middle), (3, RO))})
    assert verdict(fr.claims(folder), "P12") == expected


def test_p10_part_of_the_network_removed_with_accuracy_kept(tmp_path):
    kept = unit({"conv": FR, "fc": FR})
    kept["accuracy"].loc[{"layer": "global", "input": "clean"}] = 0.9  # β̄ = 1 at every α: nothing is lost
    assert verdict(fr.claims(results(tmp_path / "a", {("m", "digits", 0, 1): kept})), "P10") == "holds"
    lost = unit({"conv": FR, "fc": FR}, glob=(FR, FR))  # β̄ below 0.98 as soon as anything is removed
    assert verdict(fr.claims(results(tmp_path / "b", {("m", "digits", 0, 1): lost})), "P10") == "differs"
    assert verdicts.kept_share(store.open_results(tmp_path / "a"), "m", "digits") == 1.0
    assert verdicts.kept_share(store.open_results(tmp_path / "b"), "m", "digits") == 0.0  # not NaN: no threshold
    assert "m/digits: 0% of all weights" in fr.claims(tmp_path / "b").set_index("id").loc["P10", "evidence"]


def test_the_table_has_every_claim_and_says_what_would_test_the_untestable(tmp_path):
    table = fr.claims(results(tmp_path, {("m", "digits", 0, 1): unit({"conv": FR, "fc": FR})}))
    assert list(table.columns) == ["id", "claim", "rule", "evidence", "verdict", "code_reading", "chapter"]
    assert list(table["id"]) == ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P10", "P11", "P12",
                                 "S2a", "S2b", "S3a", "S3b", "S4"]
    assert set(table["verdict"]) <= {"holds", "differs", "untestable"}
    for row in table[table["verdict"] == "untestable"].itertuples():
        assert "needs" in row.evidence, row.id
    assert table.set_index("id").loc["P8", "evidence"].startswith("needs the selective study")
    assert all(row.claim and row.rule for row in table.itertuples())


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(fr.FragilityError, match="tol must be"):
        fr.claims(tmp_path, tol=-1)
    with pytest.raises(fr.FragilityError, match="does not exist"):
        fr.claims(tmp_path / "absent")
    with pytest.raises(fr.FragilityError, match="no stored responses"):
        fr.claims(tmp_path)
