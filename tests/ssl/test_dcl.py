"""DCL / DCLW: the loss against the paper's formula, errors, the registry, the Trainer, DDP."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metricssl.losses import DCLLoss, DCLWLoss
from metricssl.models.heads import ProjectionHead
from metricssl.ssl.dcl import DCL, DCLConfig
from metricssl.ssl.method import Batch
from metricssl.ssl.registry import METHODS, build_method
from tests.gloo import check_half_batches_match_the_whole_batch
from tests.ssl.tiny_runs import assert_refused_by_name, tiny_trainer


def linear_method(**kwargs):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))
    return DCL(backbone, nn.Linear(16, 8), **kwargs).double()


def views(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64) for _ in range(2)]


def dcl(z1, z2, tau, sigma=None):
    """The paper's decoupled loss written out over the 2N anchors (eq. 6; DCLW's w of 3.2)."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = z1.shape[0]
    w = [1.0] * n
    if sigma is not None:
        e = [math.exp(float(z1[i] @ z2[i]) / sigma) for i in range(n)]
        w = [2 - n * e[i] / sum(e) for i in range(n)]
    total = 0.0
    for a, b in ((z1, z2), (z2, z1)):
        for i in range(n):
            negatives = sum(
                math.exp(float(a[i] @ v[k]) / tau) for v in (a, b) for k in range(n) if k != i
            )
            total += -w[i] * float(a[i] @ b[i]) / tau + math.log(negatives)
    return total / (2 * n)


@pytest.mark.parametrize("weighted", [False, True])
def test_loss_is_the_papers_decoupled_loss(weighted):
    method = linear_method(temperature=0.2, weighted=weighted, sigma=0.4)
    assert isinstance(method.criterion, DCLWLoss if weighted else DCLLoss)
    v1, v2 = views()
    with torch.no_grad():
        z1, z2 = (method.projection_head(method.backbone(v)) for v in (v1, v2))
    loss = method.training_step(Batch([v1, v2]))["loss"]
    expected = dcl(z1, z2, 0.2, 0.4 if weighted else None)
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_loss_falls_on_a_fixed_batch():
    method = linear_method()
    opt = torch.optim.Adam(method.parameters(), lr=1e-2)
    batch = Batch(views(n=8))
    losses = []
    for _ in range(20):
        loss = method.training_step(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"temperature": 0}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"sigma": 0}, "sigma"),
        ({"weighted": "yes"}, "weighted"),
    ],
)
def test_bad_arguments_are_refused_with_their_name(kwargs, name):
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))
    assert_refused_by_name(
        name,
        lambda: DCL(backbone, nn.Linear(16, 8), **kwargs),
        lambda: DCLConfig(**kwargs),
    )


def test_a_module_is_required_and_a_batch_of_one_is_refused():
    with pytest.raises(TypeError, match="backbone"):
        DCL("resnet", nn.Linear(16, 8))
    with pytest.raises(ValueError, match="at least 2 images"):
        linear_method().training_step(Batch([v[:1] for v in views()]))


def test_the_registry_builds_simclrs_recipe_and_dclw_by_hparam():
    method = build_method("dcl", (1, 28, 28))
    assert isinstance(method, DCL) and METHODS["dcl"].cls is DCL
    assert isinstance(method.projection_head, ProjectionHead)
    assert method.temperature == 0.1 and not method.weighted
    assert METHODS["dcl"].views is METHODS["simclr"].views
    weighted = build_method("dcl", (1, 28, 28), hparams={"weighted": True, "sigma": 0.3})
    assert isinstance(weighted.criterion, DCLWLoss) and weighted.criterion.sigma == 0.3


def test_the_trainer_trains_it(tmp_path):
    trainer = tiny_trainer(
        tmp_path,
        "dcl",
        backbone_kwargs={"embedding_dim": 16, "width": 4},
        hparams={"proj_hidden_dim": 32, "proj_output_dim": 16},
        epochs=2,
        steps_per_epoch=2,
    )
    final = trainer.fit()
    assert math.isfinite(final["loss"]) and trainer.step == 4


def ddp_method(weighted=True):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(16, 6))
    return DCL(backbone, nn.Linear(6, 5), temperature=0.5, weighted=weighted).double()


def no_state(method):
    return {}


def test_half_batches_under_ddp_match_the_whole_batch(tmp_path):
    # DCLW: the negatives and the weights' softmax both span the two ranks' rows.
    check_half_batches_match_the_whole_batch(tmp_path, ddp_method, no_state)
