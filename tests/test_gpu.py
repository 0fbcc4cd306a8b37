"""On CUDA, distances, losses and miners give the CPU's values and stay on the device, in
the input dtype. Skipped without CUDA (see conftest.py)."""

import importlib
import warnings

import pytest
import torch

from metricssl.distances.cosine_similarity import CosineSimilarity
from metricssl.distances.dot_product_similarity import DotProductSimilarity
from metricssl.distances.lp_distance import LpDistance
from metricssl.distances.snr_distance import SNRDistance
from metricssl.reducers.avg_non_zero_reducer import AvgNonZeroReducer
from metricssl.utils import loss_and_miner_utils as lmu
from tests.parity import random_embeddings, random_labels

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

DEVICE = "cuda"
TOL = {
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.float64: dict(rtol=1e-7, atol=1e-9),
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
}


@pytest.fixture(autouse=True)
def exact_matmul():
    """TF32 would make CUDA matmuls differ from the CPU's by ~1e-3; compare without it."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def lazy(module, name):
    """A class written by another part of the project; skip the test until it exists."""
    path = f"metricssl.{module}"
    try:
        found = importlib.import_module(path)
    except ModuleNotFoundError as e:
        if e.name != path:
            raise  # the module exists but is broken: that is a failure, not a skip
        found = None
    if not hasattr(found, name):
        pytest.skip(f"{path}.{name} is not implemented yet")
    return getattr(found, name)


def run_both(fn, *tensors):
    """fn on CPU and on CUDA copies; returns the two outputs and the gradients of each leaf."""
    results = []
    for device in ("cpu", DEVICE):
        leaves = [t.detach().to(device).requires_grad_(t.is_floating_point()) for t in tensors]
        out = fn(*leaves)
        float_leaves = [t for t in leaves if t.requires_grad]
        grads = torch.autograd.grad(out.float().sum(), float_leaves, allow_unused=True)
        results.append((out, grads))
    return results


@pytest.mark.parametrize(
    "make_distance",
    [
        LpDistance,
        lambda: LpDistance(p=1, normalize_embeddings=False),
        CosineSimilarity,
        lambda: DotProductSimilarity(normalize_embeddings=False),
        SNRDistance,
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_distances_match_cpu(make_distance, dtype):
    x, y = random_embeddings(33, 16, dtype, seed=1), random_embeddings(20, 16, dtype, seed=2)
    (cpu, cpu_g), (gpu, gpu_g) = run_both(lambda a, b: make_distance()(a, b), x, y)
    assert gpu.device.type == "cuda" and gpu.dtype == dtype
    torch.testing.assert_close(gpu.cpu().double(), cpu.double(), **TOL[dtype])
    for g1, g2 in zip(cpu_g, gpu_g):
        assert g2.device.type == "cuda" and g2.dtype == dtype
        torch.testing.assert_close(g2.cpu().double(), g1.double(), **TOL[dtype])


@pytest.mark.parametrize(
    "module, name, kwargs",
    [
        ("losses.contrastive_loss", "ContrastiveLoss", {}),
        ("losses.triplet_margin_loss", "TripletMarginLoss", {}),
        ("losses.ntxent_loss", "NTXentLoss", {}),
        ("losses.multi_similarity_loss", "MultiSimilarityLoss", {}),
        ("losses.supcon_loss", "SupConLoss", {}),
        ("losses.circle_loss", "CircleLoss", {}),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_core_losses_match_cpu(module, name, kwargs, dtype):
    loss_cls = lazy(module, name)
    emb = random_embeddings(64, 32, dtype, seed=3)
    labels = random_labels(64, 8, seed=3)
    (cpu, cpu_g), (gpu, gpu_g) = run_both(lambda e, lab: loss_cls(**kwargs)(e, lab), emb, labels)
    assert gpu.device.type == "cuda" and gpu.dtype == dtype and gpu.ndim == 0
    torch.testing.assert_close(gpu.cpu().double(), cpu.double(), **TOL[dtype])
    assert gpu_g[0].device.type == "cuda" and gpu_g[0].dtype == dtype
    torch.testing.assert_close(gpu_g[0].cpu().double(), cpu_g[0].double(), **TOL[dtype])


def test_labels_on_the_cpu_follow_cuda_embeddings():
    loss_cls = lazy("losses.triplet_margin_loss", "TripletMarginLoss")
    emb = random_embeddings(16, 8).to(DEVICE).requires_grad_(True)
    out = loss_cls()(emb, random_labels(16, 4))  # labels stay on the CPU
    assert out.device.type == "cuda"
    out.backward()


def test_nan_policy_on_cuda_returns_nan_without_a_warning():
    loss_cls = lazy("losses.contrastive_loss", "ContrastiveLoss")
    emb = random_embeddings(8, 4).to(DEVICE)
    emb[2, 0] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = loss_cls()(emb, random_labels(8, 2).to(DEVICE))
    assert torch.isnan(out.cpu())


@pytest.mark.parametrize(
    "module, name, kwargs",
    [
        ("miners.triplet_margin_miner", "TripletMarginMiner", dict(type_of_triplets="semihard")),
        ("miners.batch_hard_miner", "BatchHardMiner", {}),
        ("miners.multi_similarity_miner", "MultiSimilarityMiner", {}),
    ],
)
def test_miners_match_cpu(module, name, kwargs):
    miner_cls = lazy(module, name)
    emb, labels = random_embeddings(48, 16, torch.float64, seed=4), random_labels(48, 6, seed=4)
    cpu = miner_cls(**kwargs)(emb, labels)
    gpu = miner_cls(**kwargs)(emb.to(DEVICE), labels.to(DEVICE))
    assert all(t.device.type == "cuda" for t in gpu)
    for a, b in zip(cpu, gpu):
        assert torch.equal(a, b.cpu())


def test_pair_and_triplet_indices_match_cpu():
    labels = random_labels(40, 5, seed=5)
    for fn in (lmu.get_all_pairs_indices, lmu.get_all_triplets_indices):
        cpu, gpu = fn(labels), fn(labels.to(DEVICE))
        for a, b in zip(cpu, gpu):
            assert b.device.type == "cuda" and torch.equal(a, b.cpu())


def test_fused_reduction_on_cuda():
    losses = torch.rand(50, 7, device=DEVICE) - 0.2
    emb = torch.randn(4, 3, device=DEVICE)
    fused = AvgNonZeroReducer().fused()
    out = fused.finish(*fused.partial(losses), emb)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), losses[losses > 0].mean().cpu())
