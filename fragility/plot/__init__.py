"""Drawing (as xarray's own `plot` package): `draw` holds the primitives every figure shares, `responses` the
paper's Fig. 4–8 (one model's responses) and `scores` its Fig. 9–10 (parameter scores over models and epochs).
Fig. 11, Fig. 12 and the related studies are drawn by their study modules (`fragility.studies`).

Matplotlib is imported when a figure is drawn, not when these modules are imported.
"""
