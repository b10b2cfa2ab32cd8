"""Drawing primitives (as xarray's own `plot` package): `draw` holds what every figure shares — the figure with its
provenance line, images, areas, bands, grids. The figures themselves belong to their chapters: the paper's Fig. 4–10
to `fragility.figures`, Fig. 11, Fig. 12 and the related studies to their study modules (`fragility.studies`).

Matplotlib is imported when a figure is drawn, not when these modules are imported.
"""
