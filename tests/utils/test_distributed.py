"""utils.distributed: single-process behaviour, and a 2-process gloo run of gather_with_grad
and of the losses that gather (their DDP gradients must equal the single-process ones)."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from metricssl.losses.barlow_twins_loss import BarlowTwinsLoss
from metricssl.losses.vicreg_loss import VICRegLoss
from metricssl.utils import distributed


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


WORLD = 2


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


def _worker(rank, rendezvous):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=WORLD)
    try:
        assert distributed.is_distributed()
        assert distributed.world_size() == WORLD and distributed.rank() == rank
        _check_gather(rank)
        _check_loss_under_ddp(rank, lambda on: BarlowTwinsLoss(gather_distributed=on))
        _check_loss_under_ddp(rank, lambda on: VICRegLoss(gather_distributed=on))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_process_gloo_gather_and_losses(tmp_path):
    # A file rendezvous: no TCP port to race for with tests running in parallel.
    mp.spawn(_worker, args=(f"file://{tmp_path / 'rendezvous'}",), nprocs=WORLD, join=True)
