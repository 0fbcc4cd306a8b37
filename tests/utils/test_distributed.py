"""utils.distributed: single-process behaviour, and a 2-process gloo run of gather_with_grad,
of the losses that gather, and of DistributedLossWrapper / DistributedMinerWrapper: their
values and gradients must equal PML's wrapper's (default) or, with ``unscaled=True``, one
process's on the whole batch."""

import pytest
import torch
import torch.distributed as dist
from pytorch_metric_learning.losses import ContrastiveLoss as PMLContrastiveLoss
from pytorch_metric_learning.losses import CrossBatchMemory as PMLCrossBatchMemory
from pytorch_metric_learning.losses import ProxyNCALoss as PMLProxyNCALoss
from pytorch_metric_learning.utils import distributed as pml_distributed

from metricssl.losses.barlow_twins_loss import BarlowTwinsLoss
from metricssl.losses.base_metric_loss_function import BaseMetricLossFunction
from metricssl.losses.contrastive_loss import ContrastiveLoss
from metricssl.losses.cross_batch_memory import CrossBatchMemory
from metricssl.losses.proxy_losses import ProxyNCALoss
from metricssl.losses.triplet_margin_loss import TripletMarginLoss
from metricssl.losses.vicreg_loss import VICRegLoss
from metricssl.miners.pair_margin_miner import PairMarginMiner
from metricssl.miners.triplet_margin_miner import TripletMarginMiner
from metricssl.reducers.mean_reducer import MeanReducer
from metricssl.utils import distributed
from metricssl.utils import loss_and_miner_utils as lmu
from metricssl.utils.distributed import (
    DistributedLossWrapper,
    DistributedMinerWrapper,
)
from tests.gloo import WORLD, run_ranks
from tests.parity import same_indices
from tests.ssl.fake_cuda import FakeCuda


def test_single_process_defaults():
    assert not distributed.is_distributed()
    assert distributed.world_size() == 1
    assert distributed.rank() == 0


def test_gather_is_identity_in_one_process():
    x = torch.randn(5, 3, requires_grad=True)
    y = distributed.gather_with_grad(x)
    assert y is x


def test_gather_rejects_bad_input():
    with pytest.raises(TypeError):
        distributed.gather_with_grad([1.0, 2.0])
    with pytest.raises(ValueError):
        distributed.gather_with_grad(torch.tensor(1.0))


def _check_gather(rank):
    # Unequal row counts: rank 0 holds 3 rows, rank 1 holds 5.
    g = torch.Generator().manual_seed(0)
    full = torch.randn(8, 4, generator=g, dtype=torch.float64)
    weights = torch.randn(8, 4, generator=g, dtype=torch.float64)
    rows = slice(0, 3) if rank == 0 else slice(3, 8)
    local = full[rows].clone().requires_grad_()
    gathered = distributed.gather_with_grad(local)
    torch.testing.assert_close(gathered, full)
    (gathered * weights).sum().backward()
    # Every rank back-propagates the same loss: the local rows get world_size x their gradient.
    torch.testing.assert_close(local.grad, WORLD * weights[rows])


def _check_loss_under_ddp(rank, make_loss):
    """DDP-averaged parameter gradients with gather_distributed equal the one-process ones."""
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(16, 6, generator=g, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(16, 6, generator=g, dtype=torch.float64)
    torch.manual_seed(2)
    model = torch.nn.Linear(6, 5).double()
    reference = torch.nn.Linear(6, 5).double()
    reference.load_state_dict(model.state_dict())

    ref_loss = make_loss(False)(reference(x1), reference(x2))
    ref_loss.backward()

    ddp = torch.nn.parallel.DistributedDataParallel(model)
    rows = slice(rank * 8, rank * 8 + 8)
    loss = make_loss(True)(ddp(x1[rows]), ddp(x2[rows]))
    torch.testing.assert_close(loss, ref_loss)  # every rank sees the global loss
    loss.backward()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    # Without gathering, the per-rank objective differs: the check above is not vacuous.
    local_only = make_loss(False)(reference(x1[rows]), reference(x2[rows]))
    assert not torch.allclose(local_only, ref_loss)


# ----------------------------------------------------------------------------------------------
# DistributedLossWrapper / DistributedMinerWrapper and PML's helpers.

UNEQUAL = (7, 9)  # rows held by rank 0 and rank 1
EQUAL = (8, 8)


def _rows(rank, sizes):
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def _local_first(rank, sizes):
    """Global row of each row of the gathered batch as the wrappers order it."""
    rows = _rows(rank, sizes)
    n = sum(sizes)
    return torch.cat(
        [torch.arange(rows.start, rows.stop), torch.arange(rows.start), torch.arange(rows.stop, n)]
    )


def _data(seed=1, n=16, num_classes=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return x, labels


def _models():
    torch.manual_seed(2)
    model = torch.nn.Linear(6, 5).double()
    reference = torch.nn.Linear(6, 5).double()
    reference.load_state_dict(model.state_dict())
    return model, reference


def _same_as_one_process(rank, sizes, distributed_fn, single_fn, x, labels, scale=1.0):
    """Value and DDP-averaged parameter gradients of ``distributed_fn`` on this rank's rows
    equal ``scale`` x value and the gradients of ``single_fn`` on the whole batch."""
    model, reference = _models()
    expected = single_fn(reference(x), labels)
    expected.backward()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    rows = _rows(rank, sizes)
    value = distributed_fn(ddp(x[rows]), labels[rows])
    torch.testing.assert_close(value, scale * expected.detach())
    value.backward()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def _check_pair_loss(rank):
    x, labels = _data()
    wrapped = DistributedLossWrapper(ContrastiveLoss(), unscaled=True)
    _same_as_one_process(rank, UNEQUAL, wrapped, ContrastiveLoss(), x, labels)
    # A reference set, gathered too.
    x_ref, ref_labels = _data(seed=3)
    rows = _rows(rank, UNEQUAL)

    def dist_fn(e, lab):
        return wrapped(e, lab, ref_emb=x_ref[rows, :5], ref_labels=ref_labels[rows])

    def single_fn(e, lab):
        return ContrastiveLoss()(e, lab, ref_emb=x_ref[:, :5], ref_labels=ref_labels)

    _same_as_one_process(rank, UNEQUAL, dist_fn, single_fn, x, labels)


def _check_pml_difference(rank):
    """PML's wrapper returns world_size x the loss; its DDP gradients (efficient=False) are
    the same as one process's."""
    x, labels = _data()
    pml_wrapped = pml_distributed.DistributedLossWrapper(PMLContrastiveLoss())
    _same_as_one_process(rank, EQUAL, pml_wrapped, ContrastiveLoss(), x, labels, scale=float(WORLD))


def _pml_parity(rank, ours, theirs, x, labels, weights=None, **kwargs):
    """Our wrapper and PML's on this rank's rows: the same value, the same gradient of the
    local embeddings and of the loss's weights (``weights(wrapper)``)."""
    rows = _rows(rank, EQUAL)
    results = []
    for wrapper in (ours, theirs):
        e = x[rows].clone().requires_grad_(True)
        local = {k: (v[rows] if torch.is_tensor(v) else v) for k, v in kwargs.items()}
        value = wrapper(e, labels[rows], **local)
        value.backward()
        grads = [e.grad] + ([] if weights is None else [weights(wrapper).grad])
        results.append((value.detach(), grads))
    (v_ours, g_ours), (v_theirs, g_theirs) = results
    torch.testing.assert_close(v_ours, v_theirs)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b)


def _check_pml_parity(rank):
    """By default the wrapper is PML's: value (world_size x the loss) and gradients, with
    efficient False and True, with a ref_emb, with a loss that has weights, and around a
    CrossBatchMemory."""
    x, labels = _data(seed=11)
    x_ref, ref_labels = _data(seed=12)
    for efficient in (False, True):
        for kwargs in ({}, {"ref_emb": x_ref, "ref_labels": ref_labels}):
            _pml_parity(
                rank,
                DistributedLossWrapper(ContrastiveLoss(), efficient=efficient),
                pml_distributed.DistributedLossWrapper(PMLContrastiveLoss(), efficient=efficient),
                x,
                labels,
                **kwargs,
            )
    # A loss with weights (no ref_emb, so not efficient): PML's world_size x gradient.
    torch.manual_seed(4)
    ours = DistributedLossWrapper(ProxyNCALoss(4, 6))
    theirs = pml_distributed.DistributedLossWrapper(PMLProxyNCALoss(4, 6))
    theirs.loss.proxies.data = ours.loss.proxies.data.clone()
    _pml_parity(rank, ours, theirs, x, labels, weights=lambda w: w.loss.proxies)
    _pml_parity(
        rank,
        DistributedLossWrapper(CrossBatchMemory(ContrastiveLoss(), 6, memory_size=64)),
        pml_distributed.DistributedLossWrapper(
            PMLCrossBatchMemory(PMLContrastiveLoss(), 6, memory_size=64)
        ),
        x,
        labels,
    )


def _check_triplet_loss_with_miner(rank):
    x, labels = _data(seed=4)
    miner = DistributedMinerWrapper(TripletMarginMiner(margin=0.5, type_of_triplets="semihard"))
    loss = DistributedLossWrapper(TripletMarginLoss(margin=0.5), unscaled=True)

    def dist_fn(e, lab):
        return loss(e, lab, miner(e, lab))

    def single_fn(e, lab):
        return TripletMarginLoss(margin=0.5)(
            e, lab, TripletMarginMiner(margin=0.5, type_of_triplets="semihard")(e, lab)
        )

    _same_as_one_process(rank, UNEQUAL, dist_fn, single_fn, x, labels)


def _check_miner_wrapper(rank):
    x, labels = _data(seed=5)
    miner = TripletMarginMiner(margin=0.3)
    expected = miner(x, labels)
    rows = _rows(rank, UNEQUAL)
    order = _local_first(rank, UNEQUAL)
    mined = DistributedMinerWrapper(miner)(x[rows], labels[rows])
    same_indices(tuple(order[t] for t in mined), expected)
    # efficient: this rank's anchors against the gathered batch.
    a, p, n = DistributedMinerWrapper(miner, efficient=True)(x[rows], labels[rows])
    mine = expected[0] >= rows.start
    mine &= expected[0] < rows.stop
    same_indices((a + rows.start, order[p], order[n]), tuple(t[mine] for t in expected))


def _check_efficient(rank):
    # Balanced labels and a mean: each rank holds the same number of pairs, so the mean over
    # ranks is the whole-batch loss.
    x, _ = _data(seed=6)
    balanced = torch.arange(16) % 4
    wrapped = DistributedLossWrapper(
        ContrastiveLoss(reducer=MeanReducer()), efficient=True, unscaled=True
    )
    _same_as_one_process(rank, EQUAL, wrapped, ContrastiveLoss(reducer=MeanReducer()), x, balanced)

    # In general: the objective is the mean over ranks of each rank's anchors' loss.
    x, labels = _data(seed=7)
    wrapped = DistributedLossWrapper(ContrastiveLoss(), efficient=True, unscaled=True)

    def mean_of_rank_losses(e, lab):
        total = 0
        for r in range(WORLD):
            rows, order = _rows(r, UNEQUAL), _local_first(r, UNEQUAL)
            a1, p, a2, n = lmu.get_all_pairs_indices(lab[rows], lab[order])
            keep = a1 != p  # the anchor's own copy sits at its own row of the gathered batch
            pairs = (a1[keep], p[keep], a2, n)
            total = total + ContrastiveLoss()(e[rows], lab[rows], pairs, e[order], lab[order])
        return total / WORLD

    _same_as_one_process(rank, UNEQUAL, wrapped, mean_of_rank_losses, x, labels)


def _check_cross_batch_memory(rank):
    x, labels = _data(seed=8)

    def make():
        return CrossBatchMemory(ContrastiveLoss(), embedding_size=5, memory_size=32)

    wrapped = DistributedLossWrapper(make(), unscaled=True)
    _same_as_one_process(rank, UNEQUAL, wrapped, make(), x, labels)


class _ProxyLoss(BaseMetricLossFunction):
    """A loss with weights: each embedding's squared distance to its class's proxy."""

    def __init__(self):
        super().__init__()
        self.proxies = torch.nn.Parameter(torch.randn(4, 6, dtype=torch.float64))

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        losses = (embeddings - self.proxies[labels]).pow(2).sum(dim=1)
        indices = torch.arange(len(losses), device=losses.device)
        return {"loss": {"losses": losses, "indices": indices, "reduction_type": "element"}}


def _check_loss_weights(rank):
    """unscaled=True: the weights of a loss receive the single-process gradient (PML:
    world_size x it)."""
    x, labels = _data(seed=9)
    torch.manual_seed(3)
    single = _ProxyLoss()
    wrapped_loss = _ProxyLoss()
    wrapped_loss.load_state_dict(single.state_dict())
    single(x, labels).backward()
    rows = _rows(rank, UNEQUAL)
    DistributedLossWrapper(wrapped_loss, unscaled=True)(x[rows], labels[rows]).backward()
    torch.testing.assert_close(wrapped_loss.proxies.grad, single.proxies.grad)


def _check_pml_helpers(rank):
    x, labels = _data(seed=10)
    rows = _rows(rank, EQUAL)
    others = torch.cat([x[: rows.start], x[rows.stop :]])
    torch.testing.assert_close(distributed.all_gather(x[rows]), others)
    torch.testing.assert_close(pml_distributed.all_gather(x[rows]), others)
    ours = distributed.gather_emb_and_ref(x[rows], labels[rows])
    theirs = pml_distributed.gather_emb_and_ref(x[rows], labels[rows])
    for a, b in zip(ours, theirs):
        if a is None:
            assert b is None
        else:
            torch.testing.assert_close(a, b)
    mask = torch.arange(8) % 3 == 0
    torch.testing.assert_close(
        distributed.gather_enqueue_mask(mask, x.device),
        pml_distributed.gather_enqueue_mask(mask, x.device),
    )


def _worker(rank):
    assert distributed.is_distributed()
    assert distributed.world_size() == WORLD and distributed.rank() == rank
    _check_gather(rank)
    _check_loss_under_ddp(rank, lambda on: BarlowTwinsLoss(gather_distributed=on))
    _check_loss_under_ddp(rank, lambda on: VICRegLoss(gather_distributed=on))
    _check_pair_loss(rank)
    _check_pml_difference(rank)
    _check_pml_parity(rank)
    _check_triplet_loss_with_miner(rank)
    _check_miner_wrapper(rank)
    _check_efficient(rank)
    _check_cross_batch_memory(rank)
    _check_loss_weights(rank)
    _check_pml_helpers(rank)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_process_gloo(tmp_path):
    # One pair of processes runs every check (starting them dominates the time).
    run_ranks(_worker, tmp_path, start_method="spawn")


def test_wrappers_without_process_group():
    x, labels = _data()
    loss = ContrastiveLoss()
    with pytest.warns(UserWarning, match="process group"):
        value = DistributedLossWrapper(loss)(x, labels)
    torch.testing.assert_close(value, loss(x, labels))
    miner = TripletMarginMiner(margin=0.3)
    same_indices(DistributedMinerWrapper(miner)(x, labels), miner(x, labels))
    memory = CrossBatchMemory(ContrastiveLoss(), embedding_size=6, memory_size=32)
    with pytest.warns(UserWarning):
        DistributedLossWrapper(memory)(x, labels)
    assert memory.queue_idx == 16


def test_wrapper_arguments():
    with pytest.raises(TypeError, match="loss"):
        DistributedLossWrapper(torch.nn.MSELoss())
    with pytest.raises(TypeError, match="efficient"):
        DistributedLossWrapper(ContrastiveLoss(), efficient=1)
    with pytest.raises(TypeError, match="unscaled"):
        DistributedLossWrapper(ContrastiveLoss(), unscaled=1)
    memory = CrossBatchMemory(ContrastiveLoss(), embedding_size=6)
    with pytest.raises(ValueError, match="CrossBatchMemory"):
        DistributedLossWrapper(memory, efficient=True)
    with pytest.raises(TypeError, match="miner"):
        DistributedMinerWrapper(ContrastiveLoss())
    with pytest.raises(TypeError, match="efficient"):
        DistributedMinerWrapper(TripletMarginMiner(), efficient="yes")


def test_pml_helpers_in_one_process():
    x, labels = _data()
    assert distributed.all_gather(x) is None
    all_emb, all_labels, same_labels = distributed.gather(x, labels)
    assert all_emb is x and torch.equal(all_labels, labels)
    assert distributed.select_ref_or_regular(1, None) == 1
    assert distributed.select_ref_or_regular(1, 2) == 2
    # get_indices_tuple: local anchors against a set that starts with them.
    ref_labels = torch.cat([labels[:6], torch.tensor([0, 1, 2, 3, 0])])
    ours = distributed.get_indices_tuple(labels[:6], ref_labels)
    theirs = pml_distributed.get_indices_tuple(labels[:6], ref_labels)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    ref = torch.cat([x[:6], torch.randn(5, 6, dtype=x.dtype)])
    for miner in (TripletMarginMiner(margin=0.5), PairMarginMiner(0.2, 0.8)):
        ours = distributed.get_indices_tuple(labels[:6], ref_labels, x[:6], ref, miner)
        theirs = pml_distributed.get_indices_tuple(labels[:6], ref_labels, x[:6], ref, miner)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
        assert len(ours[0]) > 0


# -- the training device and backend (issue 17); the GPUs are FakeCuda's ----------------------


@pytest.fixture
def no_torchrun(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)


def test_training_device_is_local_rank_under_torchrun(monkeypatch, no_torchrun):
    cuda = FakeCuda(monkeypatch, count=4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    for device in ("auto", "cuda", torch.device("cuda")):
        assert distributed.training_device(device) == torch.device("cuda", 3)
    # An explicit index is the user's choice; either way the GPU becomes the current one.
    assert distributed.training_device("cuda:1") == torch.device("cuda", 1)
    assert cuda.selected == [3, 3, 3, 1]
    assert distributed.training_device(torch.device("cpu")) == torch.device("cpu")


def test_training_device_without_torchrun(monkeypatch, no_torchrun):
    cuda = FakeCuda(monkeypatch, count=2)
    cuda.current = 1  # e.g. set by the user before building the Trainer
    assert distributed.training_device("cuda") == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.training_device("auto") == torch.device("cpu")


def test_training_device_errors(monkeypatch, no_torchrun):
    with pytest.raises(ValueError, match="invalid device 'gpu'"):
        distributed.training_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="is_available"):
        distributed.training_device("cuda")
    FakeCuda(monkeypatch, count=2)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match="LOCAL_RANK asks for cuda:2, but 2 GPU"):
        distributed.training_device("cuda")
    with pytest.raises(ValueError, match="'cuda:5'.*2 GPU"):
        distributed.training_device("cuda:5")
    monkeypatch.setenv("LOCAL_RANK", "first")
    with pytest.raises(ValueError, match="LOCAL_RANK must be an integer"):
        distributed.training_device("cuda")


def test_backend_follows_the_device_type():
    # torch.device("cpu") != "cpu": a string comparison once sent CPU runs to NCCL.
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    assert distributed.backend_for("cpu") == "gloo"
    assert distributed.backend_for(torch.device("cuda", 1)) == "nccl"
    assert distributed.backend_for("cuda") == "nccl"


def test_init_from_environment(monkeypatch, no_torchrun):
    backends = []
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: backends.append(backend))
    assert not distributed.init_from_environment(torch.device("cpu"))  # not under torchrun
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not distributed.init_from_environment(torch.device("cpu"))  # one process
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.init_from_environment(torch.device("cpu"))
    assert distributed.init_from_environment(torch.device("cuda", 1))
    assert backends == ["gloo", "nccl"]
