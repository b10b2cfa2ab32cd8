"""Where fragility looks for its inputs: the data folder, given on the command line (`--data`), else
$FRAGILITY_DATA, else ./data. MNIST's files (`fragility.mnist`) and every data set (`fragility.data`) live there."""
from __future__ import annotations

import os
import pathlib

ENVIRONMENT = "FRAGILITY_DATA"


def data_root(root=None) -> pathlib.Path:
    """The data folder: ``root`` if given, else $FRAGILITY_DATA, else ./data."""
    return pathlib.Path(root if root is not None else os.environ.get(ENVIRONMENT) or "data").expanduser()
