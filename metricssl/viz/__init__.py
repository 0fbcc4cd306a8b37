"""Pictures of embeddings: t-SNE/UMAP/PCA projections, class scatter plots, retrieval grids.

Needs the optional extra ``pip install 'metricssl[viz]'`` (matplotlib, umap-learn, openTSNE);
they are imported only when a function uses them. Every figure is saved as a PNG.
"""

from .projection import project
from .retrieval_grid import retrieval_grid
from .scatter import scatter_plot

__all__ = ["project", "retrieval_grid", "scatter_plot"]
