"""Run a metricssl trainer and PML's on the same seeded data and models; record what they do.

Both sides get identical copies of the models (same initial weights), their own optimizers,
their own loss/miner objects (metricssl's or PML's), the same dataset, and the same torch and
numpy seeds before training, so shuffling and random tuple sampling draw the same numbers.
"""

from __future__ import annotations

import copy

import numpy as np
import pytorch_metric_learning as pml
import torch

import metricssl


class Pairs(torch.utils.data.Dataset):
    """``(anchor, posneg, label)`` items for the two-stream trainer and tester."""

    def __init__(self, n=48, d=8, classes=4, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % classes
        centres = 3 * torch.randn(classes, d, generator=g)
        self.anchors = centres[self.labels] + torch.randn(n, d, generator=g)
        self.posnegs = centres[self.labels] + torch.randn(n, d, generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.anchors[i], self.posnegs[i], self.labels[i]


def labelled_data(n=48, d=8, classes=4, seed=0, levels=1):
    """A TensorDataset of clustered points; labels (n,) or (n, levels) (level L+1 = parent)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    x = 3 * torch.randn(classes, d, generator=g)[labels] + torch.randn(n, d, generator=g)
    if levels > 1:
        labels = torch.stack([labels // (2**L) for L in range(levels)], dim=1)
    return torch.utils.data.TensorDataset(x, labels)


def make_models(names_and_shapes, seed=0):
    """``{name: Linear}`` built from one seed, so both sides can get deep copies."""
    torch.manual_seed(seed)
    return {name: torch.nn.Linear(*shape) for name, shape in names_and_shapes.items()}


def run_trainer(
    library,
    trainer_name,
    models,
    loss_funcs,
    dataset,
    *,
    mining_funcs=None,
    num_epochs=2,
    seed=0,
    **kwargs,
):
    """Train a deep copy of ``models``; returns (trained models, per-iteration records, calls).

    ``loss_funcs`` and ``mining_funcs`` are ``library -> dict`` factories so each side gets
    its own library's objects. The records hold every loss's value (as a float) and weight
    after each iteration, read by the end_of_iteration hook.
    """
    lib = metricssl if library == "ours" else pml
    trainers = __import__(f"{lib.__name__}.trainers", fromlist=["x"])
    models = copy.deepcopy(models)
    optimizers = {
        f"{k}_optimizer": torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        for k, m in models.items()
    }
    records, calls = [], []

    def on_iteration(trainer):
        calls.append(("iteration", trainer.epoch, trainer.iteration))
        records.append(
            {
                "losses": {k: _number(v) for k, v in trainer.losses.items()},
                "weights": dict(trainer.loss_tracker.loss_weights),
                "global_iteration": trainer.get_global_iteration(),
            }
        )

    def on_epoch(trainer):
        calls.append(("epoch", trainer.epoch))

    torch.manual_seed(seed)
    np.random.seed(seed)
    trainer = getattr(trainers, trainer_name)(
        models=models,
        optimizers=optimizers,
        batch_size=16,
        loss_funcs=loss_funcs(lib),
        mining_funcs=None if mining_funcs is None else mining_funcs(lib),
        dataset=dataset,
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        end_of_iteration_hook=on_iteration,
        end_of_epoch_hook=on_epoch,
        **kwargs,
    )
    trainer.train(num_epochs=num_epochs)
    return trainer, records, calls


def _number(value):
    return float(value.detach()) if torch.is_tensor(value) else float(value)


def assert_same_training(ours, theirs, rtol=1e-4, atol=1e-5):
    """Same hook calls, same loss records, same final weights."""
    (our_trainer, our_records, our_calls) = ours
    (their_trainer, their_records, their_calls) = theirs
    assert our_calls == their_calls
    assert len(our_records) == len(their_records) > 0
    for a, b in zip(our_records, their_records):
        assert a["losses"].keys() == b["losses"].keys()
        np.testing.assert_allclose(
            list(a["losses"].values()), list(b["losses"].values()), rtol=rtol, atol=atol
        )
        assert a["weights"] == b["weights"]
        assert a["global_iteration"] == b["global_iteration"]
    assert our_trainer.models.keys() == their_trainer.models.keys()
    for name in our_trainer.models:
        for p, q in zip(
            our_trainer.models[name].parameters(), their_trainer.models[name].parameters()
        ):
            torch.testing.assert_close(p, q, rtol=rtol, atol=atol)
