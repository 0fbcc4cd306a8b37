"""Heads put on a backbone's features: projection MLPs, the BYOL/SimSiam predictor, SwAV prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validation import check_bool, check_number


def _check_2d(x: torch.Tensor, width: int, what: str) -> None:
    if x.ndim != 2 or x.shape[1] != width:
        raise ValueError(f"{what} expects features of shape (N, {width}), got {tuple(x.shape)}")


class ProjectionHead(nn.Module):
    """An MLP projection head: ``num_layers`` linear layers with BatchNorm and ReLU between them.

    Layer ``k < num_layers``: ``Linear -> [BatchNorm1d] -> ReLU`` to ``hidden_dim``; the last
    layer is ``Linear`` to ``output_dim``, followed by a ``BatchNorm1d(affine=False)`` when
    ``last_bn=True``. A Linear followed by BatchNorm has no bias (the BatchNorm shifts).
    The heads of the common methods are configurations of this one:

    ==============  ==========================================================================
    SimCLR          ``ProjectionHead(F, 2048, 128)``; v1 used ``batch_norm=False`` (Chen et
                    al., "A Simple Framework for Contrastive Learning of Visual
                    Representations", ICML 2020)
    MoCo v2         ``ProjectionHead(F, 2048, 128, batch_norm=False)`` (Chen et al., arXiv 2020)
    BYOL            ``ProjectionHead(F, 4096, 256)`` (Grill et al., "Bootstrap Your Own Latent",
                    NeurIPS 2020)
    SimSiam         ``ProjectionHead(F, 2048, 2048, num_layers=3, last_bn=True)`` (Chen and He,
                    "Exploring Simple Siamese Representation Learning", CVPR 2021)
    Barlow Twins    ``ProjectionHead(F, 8192, 8192, num_layers=3)`` (Zbontar et al., ICML 2021)
    VICReg          ``ProjectionHead(F, 8192, 8192, num_layers=3)`` (Bardes et al., ICLR 2022)
    SwAV            ``ProjectionHead(F, 2048, 128)`` (Caron et al., NeurIPS 2020)
    ==============  ==========================================================================

    Args:
        input_dim: features in (the backbone's ``num_features``).
        hidden_dim: width of the hidden layers (unused when ``num_layers == 1``).
        output_dim: features out.
        num_layers: linear layers (1 = a single linear map; 2 or 3 in the papers above).
        batch_norm: BatchNorm1d after each hidden linear layer.
        last_bn: BatchNorm1d without affine parameters after the last layer (SimSiam).

    Example:
        >>> import torch
        >>> from metricssl.models.heads import ProjectionHead
        >>> head = ProjectionHead(512, 2048, 128)
        >>> head(torch.randn(4, 512)).shape
        torch.Size([4, 128])
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_bn: bool = False,
    ):
        super().__init__()
        check_number("input_dim", input_dim, low=1, integer=True)
        check_number("hidden_dim", hidden_dim, low=1, integer=True)
        check_number("output_dim", output_dim, low=1, integer=True)
        check_number("num_layers", num_layers, low=1, integer=True)
        check_bool("batch_norm", batch_norm)
        check_bool("last_bn", last_bn)
        self.input_dim, self.hidden_dim, self.output_dim = input_dim, hidden_dim, output_dim
        self.num_layers = num_layers
        layers: list[nn.Module] = []
        width = input_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(width, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            width = hidden_dim
        layers.append(nn.Linear(width, output_dim, bias=not last_bn))
        if last_bn:
            layers.append(nn.BatchNorm1d(output_dim, affine=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _check_2d(features, self.input_dim, type(self).__name__)
        return self.layers(features)


class PredictionHead(nn.Module):
    """The BYOL / SimSiam predictor: ``Linear -> BatchNorm1d -> ReLU -> Linear``.

    Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
    NeurIPS 2020 (``PredictionHead(256, 4096, 256)``); Chen and He, "Exploring Simple Siamese
    Representation Learning", CVPR 2021 (a bottleneck, ``PredictionHead(2048, 512, 2048)``).

    Args:
        input_dim: features in (the projection's output).
        hidden_dim: hidden width.
        output_dim: features out (equal to ``input_dim`` in both papers).

    Example:
        >>> import torch
        >>> from metricssl.models.heads import PredictionHead
        >>> PredictionHead(256, 1024, 256)(torch.randn(4, 256)).shape
        torch.Size([4, 256])
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        check_number("input_dim", input_dim, low=1, integer=True)
        check_number("hidden_dim", hidden_dim, low=1, integer=True)
        check_number("output_dim", output_dim, low=1, integer=True)
        self.input_dim, self.hidden_dim, self.output_dim = input_dim, hidden_dim, output_dim
        self.layers = nn.Sequential(
            nn.Linear(input_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, output_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _check_2d(features, self.input_dim, type(self).__name__)
        return self.layers(features)


class PrototypesHead(nn.Module):
    """SwAV's prototypes: cosine scores of each feature vector against ``n_prototypes``
    learnable unit vectors.

    Caron, Misra, Mairal, Goyal, Bojanowski and Joulin, "Unsupervised Learning of Visual
    Features by Contrasting Cluster Assignments", NeurIPS 2020. ``forward(z)`` returns
    ``normalize(z) @ normalize(W).T``, shape ``(N, n_prototypes)``, so the scores are true
    cosines whatever the optimiser did to ``W``. SwAV's recipe also keeps the stored
    prototypes on the unit sphere: call :meth:`normalize_` after each optimiser step (then
    the on-the-fly normalisation of ``W`` is the identity in value).

    Args:
        input_dim: features in (the projection's output).
        n_prototypes: number of prototypes (3000 for ImageNet in the paper).

    Example:
        >>> import torch
        >>> from metricssl.models.heads import PrototypesHead
        >>> protos = PrototypesHead(128, 300)
        >>> protos(torch.randn(4, 128)).shape
        torch.Size([4, 300])
    """

    def __init__(self, input_dim: int, n_prototypes: int):
        super().__init__()
        check_number("input_dim", input_dim, low=1, integer=True)
        check_number("n_prototypes", n_prototypes, low=1, integer=True)
        self.input_dim, self.n_prototypes = input_dim, n_prototypes
        weight = torch.empty(n_prototypes, input_dim)
        nn.init.kaiming_uniform_(weight, a=5**0.5)  # nn.Linear's default initialisation
        self.weight = nn.Parameter(F.normalize(weight, dim=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _check_2d(features, self.input_dim, type(self).__name__)
        return F.normalize(features, dim=1) @ F.normalize(self.weight, dim=1).T

    @torch.no_grad()
    def normalize_(self) -> None:
        """Rescale every stored prototype to unit length, in place."""
        self.weight.copy_(F.normalize(self.weight, dim=1))
