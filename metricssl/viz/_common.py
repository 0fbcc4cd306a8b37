"""Plumbing shared by the viz modules: optional imports, array conversion, atomic PNG saving.

umap-learn, openTSNE and matplotlib are optional (``pip install 'metricssl[viz]'``), so they
are imported only when a function needs them, with an error that names the extra.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from ..core.atomic import atomic_write


def require(module: str, package: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{purpose} needs the optional package {package!r}, which is not installed. "
            f"Install the viz extra: pip install 'metricssl[viz]'"
        ) from err


def to_numpy(x, name: str) -> np.ndarray:
    """A numpy view/copy of a tensor on any device, or of an array-like."""
    if torch.is_tensor(x):
        x = x.detach()
        # numpy has no bfloat16, and float16 is too coarse for the projection maths.
        if x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        return x.cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}"
        ) from err


def check_finite(x: np.ndarray, name: str) -> None:
    if np.issubdtype(x.dtype, np.number) and not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")


def new_figure(figsize: tuple[float, float], dpi: int):
    """A matplotlib Figure on an Agg canvas: no pyplot, no global state, never shown."""
    figure_mod = require("matplotlib.figure", "matplotlib", "Plotting")
    agg = require("matplotlib.backends.backend_agg", "matplotlib", "Plotting")
    fig = figure_mod.Figure(figsize=figsize, dpi=dpi)
    agg.FigureCanvasAgg(fig)
    return fig


def check_path(path, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{name} must end in .png, got {str(path)!r}")
    return path


def save_png(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically: a reader never sees a half-written PNG."""
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png", bbox_inches="tight")
    return path
