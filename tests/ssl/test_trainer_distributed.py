"""torch.distributed on CPU (gloo, 2 processes): half a batch per rank == the whole batch.

One launch runs every check (process start-up dominates the cost). Each rank holds half of a
global batch, runs the method through DistributedDataParallel and saves its loss, its
(DDP-averaged) gradients and, for MoCo, its queue; the parent computes the same on the whole
batch in one process and compares.
"""

import os

import pytest
import torch
import torch.distributed as dist
from torch import nn

from metricssl.ssl.barlow_twins import BarlowTwins
from metricssl.ssl.method import Batch
from metricssl.ssl.moco import MoCo
from metricssl.ssl.simclr import SimCLR
from metricssl.ssl.supervised import Supervised
from metricssl.ssl.vicreg import VICReg
from tests.gloo import WORLD, run_ranks

NAMES = ("simclr", "barlow_twins", "vicreg", "moco", "supervised")
BATCH = 8  # global
LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def build(name):
    # No BatchNorm: on CPU there is no SyncBatchNorm, and per-rank batch statistics would
    # (correctly) differ from the whole batch's. Everything else is the real method.
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10))
    head = nn.Sequential(nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 6))
    if name == "simclr":
        return SimCLR(backbone, head, temperature=0.3)
    if name == "barlow_twins":
        return BarlowTwins(backbone, head, lambda_param=0.05)
    if name == "vicreg":
        return VICReg(backbone, head)
    if name == "supervised":
        return Supervised(backbone, "MultiSimilarityLoss", "MultiSimilarityMiner")
    return MoCo(backbone, head, queue_size=12, temperature=0.3)


def batch():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(BATCH, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(2)]


def run_steps(model, method, views, rows, steps):
    """``steps`` SGD steps on ``rows`` of the views; the last step's loss and gradients."""
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = model(Batch([v[rows] for v in views], LABELS[rows]))["loss"]
        loss.backward()
        grads = {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None}
        if step < steps:
            opt.step()
            method.on_step_end(step, steps)
    return loss.detach(), grads


def worker(rank, out_dir):
    half = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    results = {}
    for name in NAMES:
        method = build(name).double()
        model = nn.parallel.DistributedDataParallel(method, broadcast_buffers=False)
        # MoCo: step 1 fills the queue from both ranks, step 2 contrasts against it.
        loss, grads = run_steps(model, method, batch(), half, 2 if name == "moco" else 1)
        dist.all_reduce(loss)
        results[name] = {"loss": loss / WORLD, "grads": grads}
        if name == "moco":
            results[name]["queue"] = method.queue.clone()
    results["trainer"] = run_trainer(out_dir)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


def run_trainer(out_dir):
    """A 2-epoch Trainer run under DDP, interrupted after epoch 1 and resumed."""
    from metricssl.ssl.trainer import Trainer

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=g)
    args = dict(
        method="simclr",
        dataset=(images, torch.arange(64) % 4),
        backbone_kwargs={"embedding_dim": 8, "width": 4},
        hparams={"proj_hidden_dim": 16, "proj_output_dim": 8},
        epochs=2,
        batch_size=8,
        steps_per_epoch=2,
        out=os.path.join(out_dir, "run"),
        progress=False,
        knn_k=5,
    )
    Trainer(**args).fit(epochs=1)
    trainer = Trainer(**args)
    resumed_from = trainer.epoch
    final = trainer.fit()
    return {
        "resumed_from": resumed_from,
        "final_loss": final["loss"],
        "has_knn": "knn_accuracy" in final,
        "world_size": trainer.hyper["world_size"],
        "fingerprint": sum(p.double().sum() for p in trainer.method.parameters()),
    }


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    run_ranks(worker, out, str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("name", NAMES)
def test_half_batches_match_the_whole_batch(ranks, name):
    method = build(name).double()
    loss, grads = run_steps(method, method, batch(), slice(None), 2 if name == "moco" else 1)
    for r in ranks:
        torch.testing.assert_close(r[name]["loss"], loss)
        assert r[name]["grads"].keys() == grads.keys()
        for key, g in grads.items():
            torch.testing.assert_close(r[name]["grads"][key], g, msg=f"{name} {key}")


def test_moco_queue_is_filled_from_all_ranks(ranks):
    method = build("moco").double()
    run_steps(method, method, batch(), slice(None), 2)
    # Both ranks hold the same queue, and it is the single-process queue of the whole batch:
    # keys from rank 0's half and rank 1's half, in rank order.
    for r in ranks:
        torch.testing.assert_close(r["moco"]["queue"].double(), method.queue.double())
    assert int(method.queue_filled) == 12


def test_trainer_under_ddp_checkpoints_on_rank_0_and_resumes(ranks, tmp_path_factory):
    a, b = ranks[0]["trainer"], ranks[1]["trainer"]
    assert a["world_size"] == b["world_size"] == WORLD
    assert a["resumed_from"] == b["resumed_from"] == 1
    assert a["final_loss"] == b["final_loss"]  # the logged loss is the mean over ranks
    torch.testing.assert_close(a["fingerprint"], b["fingerprint"])  # DDP kept them in step
    assert a["has_knn"] and not b["has_knn"]  # evaluation runs on rank 0 only
