"""The online linear probe: detached from the method, learns, resumes exactly, averaged under
DDP, absent without labels, and refuses bad input naming it."""

import logging
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from metricssl.ssl.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from metricssl.ssl.linear_probe import LinearProbe, OnlineLinearProbe, ProbedMethod
from metricssl.ssl.method import Batch
from metricssl.ssl.simclr import SimCLR
from metricssl.ssl.trainer import Trainer
from tests.gloo import WORLD, run_ranks
from tests.host_reads import host_read_sites
from tests.ssl.tiny_runs import tiny_images, tiny_trainer


def make(out, **kw):
    args = dict(
        dataset=tiny_images(96, (1, 8, 8)),
        backbone_kwargs={"embedding_dim": 16, "width": 4},
        hparams={"proj_hidden_dim": 16, "proj_output_dim": 8},
        epochs=3,
        steps_per_epoch=2,
    )
    return tiny_trainer(out, "simclr", **{**args, **kw})


def no_batchnorm_simclr():
    # No BatchNorm: per-process batch statistics would (correctly) differ from the whole
    # batch's under gloo, which has no SyncBatchNorm.
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10))
    head = nn.Sequential(nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 6))
    return SimCLR(backbone, head, temperature=0.3)


def probed():
    method = no_batchnorm_simclr()
    return ProbedMethod(method, LinearProbe(10, torch.arange(3)))


BATCH = 8
LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def probe_batch(rows=slice(None)):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(BATCH, 1, 4, 4, generator=g)
    views = [torch.rand(BATCH, 1, 4, 4, generator=g) for _ in range(2)]
    return Batch([v[rows] for v in views], LABELS[rows]), images[rows]


def test_the_probe_sends_no_gradient_to_the_method():
    model = probed()
    with torch.no_grad():  # zero weights would pass no gradient back whatever the wiring
        model.probe.linear.weight.normal_(generator=torch.Generator().manual_seed(2))
    batch, images = probe_batch()
    out = model.method(batch)
    out["loss"].backward()
    alone = {k: p.grad.clone() for k, p in model.method.named_parameters()}
    model.zero_grad()
    out = model(batch, images)
    (out["loss"] + out["probe_loss"]).backward()
    for name, p in model.method.named_parameters():
        assert torch.equal(p.grad, alone[name]), name
    assert model.probe.linear.weight.grad.abs().sum() > 0


def test_a_run_with_the_probe_trains_the_method_exactly_as_without(tmp_path):
    with_probe = make(tmp_path / "a")
    without = make(tmp_path / "b", linear_probe=False)
    assert with_probe.probe is not None and without.probe is None
    with_probe.fit()
    without.fit()
    a, b = with_probe.method.state_dict(), without.method.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert with_probe.history[-1]["loss"] == without.history[-1]["loss"]
    assert {"probe_loss", "probe_train_accuracy", "probe_accuracy"} <= set(with_probe.history[-1])
    assert not any(k.startswith("probe") for k in without.history[-1])
    assert "probe=" in Trainer._postfix(with_probe.history[-1])


def test_a_step_with_the_probe_does_not_wait_for_the_device(tmp_path, monkeypatch):
    """On a GPU each read of a value on the host waits for the queued kernels: the probe's
    features, loss, accuracy and optimizer step read none."""
    trainer = make(tmp_path, epochs=1)
    order = trainer._epoch_batches(0)
    steps = []
    for micro in range(2):
        images, labels = next(iter(trainer.train_data.batches(order[micro], trainer.batch_size)))
        views = trainer.method.make_views(images, trainer.augment_generator)
        steps.append((Batch(views, labels, order[micro]), images))
    trainer.model.train()
    with host_read_sites(monkeypatch) as reads:
        for micro, (batch, images) in enumerate(steps):
            out = trainer._forward_backward(batch, micro, check=False, images=images)
    assert "probe_train_accuracy" in out and trainer.step == 2
    ssl_package = str(Path(Trainer.__module__.replace(".", "/")).parent)
    assert [r for r in reads if ssl_package in r[1]] == []


def test_the_probe_learns_a_separable_problem():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([3, 7, 9]).repeat(200)
    centres = torch.randn(10, 8, generator=g) * 3
    features = centres[labels] + torch.randn(600, 8, generator=g)
    online = OnlineLinearProbe(LinearProbe(8, labels), total_steps=150)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for _ in range(150):
        rows = torch.randint(0, 500, (64,), generator=g)
        loss, _ = online.module.loss_and_accuracy(features[rows], labels[rows])
        loss.backward()
        online.step(scaler)
    assert online.accuracy(features[500:], labels[500:]) > 0.95
    unseen = labels[500:].clone()
    unseen[:50] = 4  # never a class of the probe: always an error
    assert online.accuracy(features[500:], unseen) <= 0.5 + 1e-9


def test_the_probe_steps_through_the_methods_gradient_scaler():
    """fp16 training scales the summed loss: the probe's step unscales its gradients (the same
    step as without scaling), and a step in which the probe did not run moves nothing."""
    features, labels = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 1, 0])
    main = nn.Parameter(torch.ones(2))
    main_optimizer = torch.optim.SGD([main], lr=0.1)
    probes = {}
    for enabled in (False, True):
        scaler = torch.amp.GradScaler("cpu", enabled=enabled, init_scale=1024.0)
        online = OnlineLinearProbe(LinearProbe(3, torch.arange(2)), total_steps=4)
        scaler.scale(main.sum()).backward()  # the probe sat this step out
        scaler.step(main_optimizer)
        online.step(scaler)
        scaler.update()
        assert torch.count_nonzero(online.module.linear.weight) == 0
        loss, _ = online.module.loss_and_accuracy(features, labels)
        scaler.scale(main.sum() + loss).backward()
        scaler.step(main_optimizer)
        online.step(scaler)
        scaler.update()
        probes[enabled] = online.module.linear.weight.detach()
    assert torch.count_nonzero(probes[True]) > 0
    torch.testing.assert_close(probes[True], probes[False])


def test_resume_restores_the_probe_and_its_optimiser_exactly(tmp_path):
    straight = make(tmp_path / "a")
    straight.fit()
    make(tmp_path / "b").fit(epochs=1)
    saved = read_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert saved["linear_probe"]["optimizer"]["state"]  # momentum buffers are saved
    resumed = make(tmp_path / "b")
    assert resumed.epoch == 1
    resumed.fit()
    a, b = straight.probe.state_dict(), resumed.probe.state_dict()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(
            state["momentum_buffer"], b["optimizer"]["state"][key]["momentum_buffer"]
        )
    assert a["schedule"] == b["schedule"]
    assert straight.history[-1]["probe_accuracy"] == resumed.history[-1]["probe_accuracy"]
    # The method alone still loads for embedding.
    method, _ = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert method.state_dict().keys() == straight.method.state_dict().keys()


def test_a_checkpoint_without_a_probe_loads_with_a_fresh_one(tmp_path, caplog):
    make(tmp_path, linear_probe=False).fit(epochs=1)
    path = tmp_path / "checkpoints" / "last.pt"
    assert "linear_probe" not in read_checkpoint(path)
    with caplog.at_level(logging.INFO):
        resumed = make(tmp_path)
    assert "has no linear probe" in caplog.text
    assert resumed.epoch == 1
    assert torch.count_nonzero(resumed.probe.module.linear.weight) == 0
    assert "probe_accuracy" in resumed.fit()


def test_a_probe_of_other_classes_is_a_checkpoint_error(tmp_path):
    from metricssl.ssl.checkpoint import CheckpointError

    make(tmp_path).fit(epochs=1)
    path = tmp_path / "checkpoints" / "last.pt"
    state = read_checkpoint(path)
    state["linear_probe"]["model"]["classes"] = torch.arange(5)
    save_checkpoint(state, path)
    with pytest.raises(CheckpointError, match="linear probe"):
        make(tmp_path)


def test_unlabelled_data_train_without_a_probe(tmp_path):
    trainer = make(tmp_path, dataset=tiny_images(96, (1, 8, 8), labelled=False))
    assert trainer.probe is None
    final = trainer.fit()
    assert not any(k.startswith("probe") for k in final)


def test_bad_input_is_refused_naming_it(tmp_path):
    with pytest.raises(TypeError, match="linear_probe"):
        make(tmp_path, linear_probe="yes")
    with pytest.raises(TypeError, match="classes"):
        LinearProbe(4, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="classes"):
        LinearProbe(4, torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="feature_dim"):
        LinearProbe(0, torch.arange(3))
    with pytest.raises(ValueError, match=r"features must be \(N, 4\)"):
        LinearProbe(4, torch.arange(3)).accuracy(torch.randn(5, 3), torch.zeros(5))
    with pytest.raises(ValueError, match="labels"):
        probed()(Batch(probe_batch()[0].views, None), probe_batch()[1])


def _ddp_worker(rank, out_dir):
    half = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    model = probed()
    ddp = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    out = ddp(*probe_batch(half))
    (out["loss"] + out["probe_loss"]).backward()
    grads = {k: p.grad.clone() for k, p in model.probe.named_parameters()}
    torch.save(grads, os.path.join(out_dir, f"probe{rank}.pt"))


def test_under_ddp_the_probe_gradients_are_the_whole_batch_gradients(tmp_path):
    run_ranks(_ddp_worker, tmp_path, str(tmp_path))
    model = probed()
    out = model(*probe_batch())
    (out["loss"] + out["probe_loss"]).backward()
    for r in range(WORLD):
        got = torch.load(tmp_path / f"probe{r}.pt", weights_only=True)
        for name, p in model.probe.named_parameters():
            torch.testing.assert_close(got[name], p.grad, msg=name)
