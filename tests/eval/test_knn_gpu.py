"""The k-NN engine and AccuracyCalculator on CUDA give the CPU's answers, over several query
chunks (a small memory budget). Skipped without CUDA (see conftest.py).

Exact ties (small integer-valued embeddings, whose L2 and inner-product arithmetic is exact on
both devices) must come out in the same order: by ascending reference index. On random data
the two devices' float32 rounding differs in the last bits, so only neighbours whose values
are separated by more than that rounding must agree.

The engine is not free of host synchronisation, so no test asserts that it is: it waits for
the device in ``eval.inputs.check_finite`` (once per input), ``knn.squared_norms`` (the
reference's norms, and each query chunk's for ``"l2"``) and ``knn.nearest`` (whether a chunk
has rows tied at the k-th neighbour). ``benchmarks/gpu_check.py`` lists the places it finds.
"""

import pytest
import torch

from metricssl.core.chunking import get_memory_budget, rows_per_chunk, set_memory_budget
from metricssl.eval.accuracy_calculator import AccuracyCalculator
from metricssl.eval.knn import METRICS, knn, search_bytes_per_row

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

BUDGET = 64 * 2**10  # a few dozen query rows per chunk at these sizes


@pytest.fixture(autouse=True)
def exact_matmul_and_small_chunks():
    """No TF32 (it would round CUDA's products differently from the CPU's), and a small
    memory budget so that every search runs over several query chunks."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    budget = get_memory_budget()
    set_memory_budget(BUDGET)
    yield
    set_memory_budget(budget)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def _integer_data(n=300, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, (n, d), generator=g).float()


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("k", [1, 6, 150, 299])
def test_engine_on_cuda_orders_ties_as_on_cpu(metric, k):
    x = _integer_data()
    q = x[:200]
    assert rows_per_chunk(search_bytes_per_row(len(x), k)) < len(q) // 2  # several chunks
    for exclude_self in (False, True):
        cpu = knn(q, x, k, metric, exclude_self)
        gpu = knn(q.cuda(), x.cuda(), k, metric, exclude_self)
        assert gpu[0].device.type == gpu[1].device.type == "cuda"
        assert gpu[0].dtype == torch.float32 and gpu[1].dtype == torch.int64
        assert torch.equal(gpu[1].cpu(), cpu[1]), (metric, k, exclude_self)
        assert torch.equal(gpu[0].cpu(), cpu[0])
    # The data ties: neighbours with equal values exist, so the order rule was exercised.
    assert (cpu[0][:, 1:] == cpu[0][:, :-1]).any() or k == 1


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("k", [10, 900])
def test_engine_on_cuda_equals_cpu_on_random_data(metric, k):
    g = torch.Generator().manual_seed(k)
    q, r = torch.randn(700, 32, generator=g), torch.randn(1000, 32, generator=g)
    cpu_d, cpu_i = knn(q, r, k + 1, metric)  # one more, to see the gap after the k-th
    gpu_d, gpu_i = knn(q.cuda(), r.cuda(), k, metric)
    torch.testing.assert_close(gpu_d.cpu(), cpu_d[:, :k], rtol=1e-4, atol=1e-4)
    # A neighbour's place is determined when its value is apart from both of its neighbours'.
    gap = (cpu_d[:, 1:] - cpu_d[:, :-1]).abs()
    tol = 1e-5 * (1 + cpu_d.abs().max())  # ~10x the float32 rounding of these values
    before = torch.cat([torch.full((len(q), 1), float("inf")), gap[:, : k - 1]], dim=1)
    determined = (before > tol) & (gap[:, :k] > tol)
    assert determined.float().mean() > 0.5  # the check is not vacuous
    assert torch.equal(gpu_i.cpu()[determined], cpu_i[:, :k][determined])


def _labelled_integer_data(n=400, seed=1):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    x = torch.randint(-2, 3, (4, 5), generator=g)[labels] + torch.randint(
        -1, 2, (n, 5), generator=g
    )
    return x.float(), labels


@pytest.mark.parametrize("k", ["max_bin_count", None, 7])
def test_accuracy_calculator_on_cuda_equals_cpu(k):
    x, labels = _labelled_integer_data()
    calc = AccuracyCalculator(exclude=("NMI", "AMI"), k=k)
    for args in ((x, labels), (x[:150], labels[:150], x[150:], labels[150:])):
        cpu = calc.get_accuracy(*args)
        gpu = calc.get_accuracy(*(a.cuda() for a in args))
        assert gpu.keys() == cpu.keys()
        for name in cpu:
            assert gpu[name] == pytest.approx(cpu[name], rel=1e-6, abs=1e-9), name
