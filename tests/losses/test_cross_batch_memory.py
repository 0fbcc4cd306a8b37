"""CrossBatchMemory: parity with PML over successive calls (the queue wraps around), with our
losses and PML's, miners, enqueue masks and input tuples; queue state; deviations; errors."""

from contextlib import contextmanager

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from metricssl.losses.contrastive_loss import ContrastiveLoss
from metricssl.losses.cross_batch_memory import CrossBatchMemory
from metricssl.losses.n_pairs_loss import NPairsLoss
from metricssl.losses.ntxent_loss import NTXentLoss
from metricssl.losses.supcon_loss import SupConLoss
from tests.parity import TOLERANCES

EMB = 8


def batches(steps, batch, num_classes, dtype, seed=0, mask_prob=None):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(batch, EMB, generator=g, dtype=torch.float64).to(dtype)
        labels = torch.randint(0, num_classes, (batch,), generator=g)
        mask = None if mask_prob is None else torch.rand(batch, generator=g) < mask_prob
        yield x, labels, mask


def run_parity(
    ours,
    theirs,
    memory_size=30,
    batch=12,
    steps=6,
    num_classes=4,
    dtype=torch.float64,
    reference_dtype=None,
    mask_prob=None,
    input_miner=None,
):
    """Feed the same batches to both wrappers; compare values, gradients and queue state."""
    tol = TOLERANCES[dtype]
    values = []
    for x, labels, mask in batches(steps, batch, num_classes, dtype, mask_prob=mask_prob):
        x1 = x.clone().requires_grad_()
        x2 = x.clone().to(reference_dtype or dtype).requires_grad_()
        tuples = (
            None if input_miner is None else input_miner(x.to(reference_dtype or dtype), labels)
        )
        v1 = ours(x1, labels, tuples, enqueue_mask=mask)
        v2 = theirs(x2, labels, tuples, enqueue_mask=mask)
        torch.testing.assert_close(v1.double(), v2.double(), **tol)
        if v2.requires_grad:
            v1.backward()
            v2.backward()
            torch.testing.assert_close(x1.grad.double(), x2.grad.double(), **tol)
        assert ours.queue_idx == theirs.queue_idx
        assert ours.has_been_filled == theirs.has_been_filled
        torch.testing.assert_close(ours.embedding_memory.double(), theirs.embedding_memory.double())
        assert torch.equal(ours.label_memory, theirs.label_memory)
        values.append(v1.item())
    return values


def wrappers(our_loss, pml_loss, memory_size=30, our_miner=None, pml_miner=None):
    return (
        CrossBatchMemory(our_loss, EMB, memory_size, miner=our_miner),
        pml_losses.CrossBatchMemory(pml_loss, EMB, memory_size, miner=pml_miner),
    )


@pytest.mark.parametrize("memory_size, batch", [(30, 12), (20, 20), (50, 7)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ntxent_parity_over_wraparound(memory_size, batch, dtype):
    ours, theirs = wrappers(
        NTXentLoss(temperature=0.2), pml_losses.NTXentLoss(temperature=0.2), memory_size
    )
    values = run_parity(ours, theirs, memory_size, batch, steps=7, dtype=dtype)
    assert any(v > 0 for v in values)


def test_supcon_parity():
    ours, theirs = wrappers(SupConLoss(), pml_losses.SupConLoss())
    run_parity(ours, theirs)


@pytest.mark.parametrize("name", ["ContrastiveLoss", "TripletMarginLoss"])
def test_our_pair_and_triplet_losses(name):
    module = {"ContrastiveLoss": "contrastive_loss", "TripletMarginLoss": "triplet_margin_loss"}
    ours_cls = getattr(pytest.importorskip(f"metricssl.losses.{module[name]}"), name)
    ours, theirs = wrappers(ours_cls(), getattr(pml_losses, name)())
    run_parity(ours, theirs)


@pytest.mark.parametrize("name", ["ContrastiveLoss", "TripletMarginLoss", "MultiSimilarityLoss"])
def test_pml_losses_inside_our_wrapper(name):
    ours, theirs = wrappers(getattr(pml_losses, name)(), getattr(pml_losses, name)())
    run_parity(ours, theirs)


@pytest.mark.parametrize(
    "make_miner",
    [
        lambda: pml_miners.MultiSimilarityMiner(epsilon=0.1),
        lambda: pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"),
        lambda: pml_miners.BatchHardMiner(),
    ],
)
def test_with_miner(make_miner):
    ours, theirs = wrappers(
        NTXentLoss(), pml_losses.NTXentLoss(), our_miner=make_miner(), pml_miner=make_miner()
    )
    run_parity(ours, theirs, batch=10, steps=5)


def test_with_miner_and_contrastive_loss():
    ours, theirs = wrappers(
        pml_losses.ContrastiveLoss(),
        pml_losses.ContrastiveLoss(),
        our_miner=pml_miners.TripletMarginMiner(margin=0.3),
        pml_miner=pml_miners.TripletMarginMiner(margin=0.3),
    )
    run_parity(ours, theirs)


@pytest.mark.parametrize("mask_prob", [0.3, 0.7])
def test_enqueue_mask(mask_prob):
    ours, theirs = wrappers(NTXentLoss(), pml_losses.NTXentLoss(), memory_size=25)
    run_parity(ours, theirs, memory_size=25, batch=14, steps=7, mask_prob=mask_prob)


@pytest.mark.parametrize(
    "make_miner",
    [
        lambda: pml_miners.MultiSimilarityMiner(epsilon=0.3),
        lambda: pml_miners.TripletMarginMiner(margin=0.5),
    ],
)
@pytest.mark.parametrize("with_inner_miner", [False, True])
def test_input_indices_tuple_is_appended(make_miner, with_inner_miner):
    inner = (
        (lambda: pml_miners.TripletMarginMiner(margin=0.2)) if with_inner_miner else (lambda: None)
    )
    ours, theirs = wrappers(
        pml_losses.ContrastiveLoss(),
        pml_losses.ContrastiveLoss(),
        our_miner=inner(),
        pml_miner=inner(),
    )
    run_parity(ours, theirs, batch=10, steps=5, input_miner=make_miner())


def test_bfloat16_against_float32():
    ours, theirs = wrappers(NTXentLoss(temperature=0.5), pml_losses.NTXentLoss(temperature=0.5))
    run_parity(ours, theirs, dtype=torch.bfloat16, reference_dtype=torch.float32, steps=4)
    assert ours.embedding_memory.dtype == torch.bfloat16


def test_same_as_inner_loss_when_batch_fills_memory():
    # With batch == memory the memory is the batch, and only self-pairs are removed.
    loss, wrapped = NTXentLoss(), CrossBatchMemory(NTXentLoss(), EMB, memory_size=16)
    for x, labels, _ in batches(3, 16, 3, torch.float64):
        torch.testing.assert_close(wrapped(x, labels), loss(x, labels))


def test_queue_contents_and_reset():
    loss_fn = CrossBatchMemory(NTXentLoss(), EMB, memory_size=10)
    seen = []
    for i, (x, labels, _) in enumerate(batches(5, 4, 3, torch.float32)):
        assert loss_fn.queue_idx == (4 * i) % 10
        loss_fn(x, labels)
        seen.append(x)
    last = torch.cat(seen)[-10:]  # slots 0..9 hold items 10..19 after 20 enqueued
    torch.testing.assert_close(loss_fn.embedding_memory, last)
    assert loss_fn.has_been_filled
    loss_fn.reset_queue()
    assert loss_fn.queue_idx == 0 and not loss_fn.has_been_filled
    assert not loss_fn.embedding_memory.any()
    assert set(loss_fn.state_dict()) >= {"embedding_memory", "label_memory"}


def test_batch_of_one_does_not_compare_with_itself():
    # Deviation from PML, which keeps the self-comparison for a batch of one.
    loss_fn = CrossBatchMemory(NTXentLoss(), EMB, memory_size=8)
    loss_fn(torch.randn(4, EMB), torch.tensor([1, 2, 3, 3]))
    x = torch.randn(1, EMB, requires_grad=True)
    loss = loss_fn(x, torch.tensor([0]))  # label 0 is nowhere else: no positives
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_enqueue_nothing_keeps_the_queue_unfilled():
    # Deviation from PML, which marks the queue as full and compares with unwritten zeros.
    loss_fn = CrossBatchMemory(NTXentLoss(), EMB, memory_size=8)
    x = torch.randn(4, EMB, requires_grad=True)
    loss = loss_fn(x, torch.tensor([0, 0, 1, 1]), enqueue_mask=torch.zeros(4, dtype=torch.bool))
    assert not loss_fn.has_been_filled and loss_fn.queue_idx == 0
    assert loss.item() == 0
    loss.backward()


def test_enqueue_everything_gives_zero_that_backpropagates():
    loss_fn = CrossBatchMemory(NTXentLoss(), EMB, memory_size=8)
    x = torch.randn(4, EMB, requires_grad=True)
    loss = loss_fn(x, torch.tensor([0, 0, 1, 1]), enqueue_mask=torch.ones(4, dtype=torch.bool))
    assert loss.item() == 0 and loss_fn.queue_idx == 4
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_supported_losses_mirror_pml():
    assert CrossBatchMemory.supported_losses() == pml_losses.CrossBatchMemory.supported_losses()


@pytest.mark.parametrize(
    "args, error",
    [
        (dict(loss=NPairsLoss(), embedding_size=8), TypeError),
        (dict(loss=NTXentLoss(), embedding_size=0), ValueError),
        (dict(loss=NTXentLoss(), embedding_size=8.0), TypeError),
        (dict(loss=NTXentLoss(), embedding_size=8, memory_size=0), ValueError),
        (dict(loss=NTXentLoss(), embedding_size=8, memory_size="10"), TypeError),
        (dict(loss=NTXentLoss(), embedding_size=8, miner="batch_hard"), TypeError),
    ],
)
def test_bad_arguments(args, error):
    with pytest.raises(error):
        CrossBatchMemory(**args)


def test_bad_inputs_leave_the_queue_untouched():
    loss_fn = CrossBatchMemory(NTXentLoss(), EMB, memory_size=10)
    x, labels = torch.randn(6, EMB), torch.randint(0, 3, (6,))
    mask = torch.zeros(6, dtype=torch.bool)
    cases = [
        ((torch.randn(6, EMB + 1), labels), {}, ValueError, "embedding_size"),
        ((x, None), {}, ValueError, "labels"),
        ((x, labels[:5]), {}, ValueError, "length"),
        ((torch.randn(11, EMB), torch.zeros(11, dtype=torch.long)), {}, ValueError, "memory_size"),
        ((x, labels), dict(enqueue_mask=mask.long()), TypeError, "bool"),
        ((x, labels), dict(enqueue_mask=mask[:5]), ValueError, "shape"),
        (
            (x, labels, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))),
            dict(enqueue_mask=mask),
            ValueError,
            "exclusive",
        ),
        (
            (x, labels, (torch.tensor([0]), torch.tensor([6]), torch.tensor([2]))),
            {},
            ValueError,
            "outside",
        ),
    ]
    for args, kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            loss_fn(*args, **kwargs)
        assert loss_fn.queue_idx == 0 and not loss_fn.embedding_memory.any()


@contextmanager
def cuda_autocast_flag():
    """What ``torch.autocast("cuda")`` switches on, on a machine without a GPU: the flag that
    PML's dtype cast (``c_f.to_dtype``) reads. It changes nothing for CPU tensors."""
    before = torch.is_autocast_enabled("cuda")
    torch.set_autocast_enabled("cuda", True)
    try:
        yield
    finally:
        torch.set_autocast_enabled("cuda", before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_embeddings_under_cuda_autocast(dtype):
    """Issue 17: under torch.autocast("cuda") the memory stayed float32 (the cast is skipped)
    and writing half-precision rows into it failed ("Index put requires the source and
    destination dtypes match"); int32 labels likewise. The memory follows the embeddings and
    labels there too, as PML's does without autocast."""
    plain = CrossBatchMemory(NTXentLoss(), EMB, memory_size=20)
    under_autocast = CrossBatchMemory(NTXentLoss(), EMB, memory_size=20)
    for x, labels, _ in batches(4, 8, 3, dtype):
        expected = plain(x, labels.int())  # half-precision rows, called directly
        with cuda_autocast_flag():
            value = under_autocast(x, labels.int())
        assert value.dtype == dtype
        torch.testing.assert_close(value, expected)
    assert under_autocast.embedding_memory.dtype == dtype
    assert under_autocast.label_memory.dtype == torch.int32
    torch.testing.assert_close(under_autocast.embedding_memory, plain.embedding_memory)


def test_under_cpu_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = torch.nn.Linear(6, EMB)
    loss_fn = CrossBatchMemory(ContrastiveLoss(), EMB, memory_size=24)
    in_float32 = CrossBatchMemory(ContrastiveLoss(), EMB, memory_size=24)
    for _ in range(4):
        x, labels = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            embeddings = model(x)
            value = loss_fn(embeddings, labels)
        assert embeddings.dtype == loss_fn.embedding_memory.dtype == torch.bfloat16
        value.backward()
        expected = in_float32(embeddings.detach().float(), labels)  # the same rows in float32
        torch.testing.assert_close(value.float(), expected, **TOLERANCES[torch.bfloat16])
    assert torch.isfinite(model.weight.grad).all() and model.weight.grad.any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_add_to_memory_writes_in_the_memory_dtype(dtype):
    loss_fn = CrossBatchMemory(NTXentLoss(), EMB, memory_size=10)  # float32, int64 memory
    x = torch.randn(4, EMB).to(dtype)
    loss_fn.add_to_memory(x, torch.arange(4, dtype=torch.int32), 4)
    assert loss_fn.embedding_memory.dtype == torch.float32
    assert torch.equal(loss_fn.embedding_memory[:4], x.float())
    assert torch.equal(loss_fn.label_memory[:4], torch.arange(4))
