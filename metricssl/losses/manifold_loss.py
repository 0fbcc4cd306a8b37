"""ManifoldLoss: proxies compared through a random walk on the batch's similarity graph."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..core import common as c_f
from ..core.validation import ArgumentError, check_embeddings, check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer
from .base_metric_loss_function import BaseMetricLossFunction
from .proxy_utils import check_embedding_size


class _SymmetricInverse(torch.autograd.Function):
    """The inverse of a symmetric positive definite matrix, by Cholesky.

    A third of the work of the LU inverse PML uses; backward is the usual
    ``-A^-T G A^-T`` (the same gradient PML's ``torch.inverse`` gives). Falls back to LU if
    rounding ever makes the matrix look indefinite.
    """

    @staticmethod
    def forward(ctx, a):
        chol, info = torch.linalg.cholesky_ex(a)
        # One host read per inverse (of a small (k, k) matrix) to pick the fallback.
        inv = torch.linalg.inv_ex(a)[0] if bool(info.any()) else torch.cholesky_inverse(chol)
        ctx.save_for_backward(inv)
        return inv

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (inv,) = ctx.saved_tensors
        inv_t = inv.mT
        return -(inv_t @ grad @ inv_t)


def _hinge_log_sum_exp(sim: torch.Tensor, own: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over rows of ``log(1 + sum_k exp(v_k))``, ``v_k = sim_k - sim_own + margin``.

    Only the other proxies with ``v_k >= 0`` count (PML's hinge: a proxy already far enough
    below the row's own proxy adds nothing).
    """
    v = sim - sim.gather(1, own.unsqueeze(1)) + margin
    own_mask = F.one_hot(own, sim.shape[1]).bool()
    v = v.masked_fill((v < 0) | own_mask, float("-inf"))
    return torch.log1p(torch.exp(v).sum(dim=1)).mean()


class ManifoldLoss(BaseMetricLossFunction):
    r"""Manifold proxy loss (PML's ``ManifoldLoss``).

    Aziere and Todorovic, "Ensemble Deep Manifold Similarity Learning using Hard Proxies",
    CVPR 2019. The ``K`` learnable ``proxies`` (``K x l``) join the batch in a graph whose
    edge weights are ``exp(2 * max(s, 0))`` (``s`` the similarity; no self loops). A random
    walk with restart on the normalised graph, ``F = (1 - alpha) (I - alpha S_bar)^-1``,
    gives manifold similarities. Each embedding belongs to one proxy (its meta class); the
    intrinsic loss asks its manifold similarity to its own proxy to beat every other proxy's
    by ``margin``, the context loss asks the same of the cosine similarity between rows of
    ``F``::

        loss = loss_int + lambdaC * loss_ctx

    Labels are not used. The meta classes are passed as ``indices_tuple``: a 1D integer
    tensor with one proxy index in ``[0, K)`` per embedding. Without it they are drawn at
    random as in PML (every proxy once, the rest uniformly, shuffled) from torch's global
    generator with PML's exact calls, so ``torch.manual_seed`` gives PML's draw; this needs a
    batch of at least ``K`` embeddings.

    Same arguments, defaults, parameter name (``proxies``, drawn with ``torch.randn(K, l)``)
    and gradients as PML. The graph is never multiplied by diagonal matrices (PML does two
    dense matrix products for that), the inverse is a Cholesky inverse, and the context
    similarities are one matrix product (PML builds a K x N x (N + K) tensor). Work runs in
    float32 for half inputs and the loss comes back in the input dtype.

    Deviations from PML: (1) float64 embeddings are inverted in float64 (PML inverts in
    float32 whatever the input), so float64 values agree with PML only to float32 precision;
    (2) ``lambdaC = inf`` gives the context loss alone, as the paper and PML's docstring
    describe (PML's code returns ``inf * loss_ctx``, i.e. inf or NaN); (3) with
    ``lambdaC = 0`` the context loss is not computed at all.

    Args:
        l: embedding size.
        K: number of proxies.
        lambdaC: weight of the context loss (>= 0; ``float("inf")`` for the context loss only).
        alpha: the random walk's continuation probability, in ``[0, 1)``.
        margin: the margin of both hinge terms.
        distance: CosineSimilarity by default.
        reducer, embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss
            (the loss is already a scalar, so a reducer has nothing to reduce).

    Example:
        >>> import torch
        >>> from metricssl.losses.manifold_loss import ManifoldLoss
        >>> loss_fn = ManifoldLoss(l=16, K=4)
        >>> meta_classes = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> loss = loss_fn(torch.randn(8, 16), indices_tuple=meta_classes)
    """

    def __init__(
        self,
        l: int,  # noqa: E741 - PML's argument name
        K: int = 50,
        lambdaC: float = 1.0,
        alpha: float = 0.8,
        margin: float = 5e-4,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("l", l, low=1, integer=True)
        check_number("K", K, low=1, integer=True)
        check_number("lambdaC", lambdaC, low=0)
        check_number("alpha", alpha, low=0, high=1, high_inclusive=False)
        check_number("margin", margin)
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.K = K
        self.l = l
        self.proxies = torch.nn.Parameter(torch.randn(K, l))
        self.lambdaC = lambdaC
        self.alpha = alpha
        self.margin = margin
        self.add_to_recordable_attributes(
            list_of_names=["K", "l", "lambdaC", "alpha", "margin"], is_stat=False
        )

    def check_inputs(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        """Embeddings of width ``l``, no labels or references; meta classes if given."""
        what = type(self).__name__
        check_embeddings(embeddings)
        if ref_emb is not None or ref_labels is not None:
            raise ArgumentError(f"{what} does not support ref_emb or ref_labels")
        if labels is not None:
            raise ArgumentError(
                f"{what} does not use labels; pass the meta classes (one proxy index in "
                f"[0, K) per embedding) as indices_tuple"
            )
        check_embedding_size(embeddings, self.l, what, "l")
        n = embeddings.shape[0]
        if indices_tuple is None:
            if n < self.K:
                raise ArgumentError(
                    f"{what}: drawing meta classes needs a batch of at least K={self.K} "
                    f"embeddings, got {n}; pass indices_tuple (one proxy index per embedding)"
                )
        else:
            meta = indices_tuple
            if not torch.is_tensor(meta) or meta.ndim != 1 or meta.is_floating_point():
                raise TypeError(
                    f"{what}: indices_tuple must be a 1D integer tensor of meta classes "
                    f"(one proxy index per embedding)"
                )
            if len(meta) != n:
                raise ArgumentError(
                    f"{what}: indices_tuple has {len(meta)} meta classes but embeddings has "
                    f"{n} rows"
                )
            lo, hi = torch.stack([meta.min(), meta.max()]).long().tolist()
            if lo < 0 or hi >= self.K:
                raise ArgumentError(
                    f"{what}: meta classes in indices_tuple must lie in [0, K={self.K}), "
                    f"got values in [{lo}, {hi}]"
                )
            indices_tuple = meta.to(embeddings.device, torch.long)
        return embeddings, None, indices_tuple, embeddings, None

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        n = len(embeddings)
        if indices_tuple is None:
            # PML's draw, call for call: every proxy once, the rest at random, shuffled.
            meta = torch.randint(0, self.K, (n - self.K,))
            meta = torch.cat((torch.arange(self.K), meta))[torch.randperm(n)]
            meta = meta.to(embeddings.device)
        else:
            meta = indices_tuple
        if self.proxies.device != embeddings.device:
            self.proxies.data = self.proxies.data.to(embeddings.device)
        work = torch.promote_types(c_f.accumulation_dtype(embeddings.dtype), self.proxies.dtype)
        nodes = torch.cat([embeddings.to(work), self.proxies.to(work)])

        # Graph weights exp(max(s, 0) / 0.5) without self loops, symmetrically normalised.
        s = torch.exp(self.distance(nodes, nodes).clamp(min=0) / 0.5)
        eye = torch.eye(len(nodes), dtype=torch.bool, device=s.device)
        s = s.masked_fill(eye, 0)
        d = s.sum(dim=1).rsqrt()
        s_bar = d.unsqueeze(1) * s * d.unsqueeze(0)
        # Random walk with restart: F = (1 - alpha) (I - alpha S_bar)^-1, SPD for alpha < 1.
        system = torch.eye(len(nodes), dtype=work, device=s.device) - self.alpha * s_bar
        walk = (1 - self.alpha) * _SymmetricInverse.apply(system)

        loss = torch.zeros((), dtype=work, device=embeddings.device)
        if self.lambdaC != math.inf:
            loss = loss + _hinge_log_sum_exp(walk[:n, n:], meta, self.margin)
        if self.lambdaC != 0:
            rows_e = F.normalize(walk[:n], dim=1)
            rows_p = F.normalize(walk[n:], dim=1)
            loss_ctx = _hinge_log_sum_exp(rows_e @ rows_p.T, meta, self.margin)
            loss = loss + (loss_ctx if self.lambdaC == math.inf else self.lambdaC * loss_ctx)
        return {
            "loss": {
                "losses": loss.to(embeddings.dtype),
                "indices": None,
                "reduction_type": "already_reduced",
            }
        }

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()
