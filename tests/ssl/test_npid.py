"""NPID and its memory bank: updates, the two losses, resume, the Trainer's indices."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metricssl.ssl.datasets import ImageData
from metricssl.ssl.memory_bank import MemoryBank
from metricssl.ssl.method import Batch
from metricssl.ssl.npid import NPID, nce_loss
from metricssl.ssl.registry import build_method
from metricssl.ssl.trainer import Trainer


def make(num_samples=64, **kwargs):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
    kwargs = {"embedding_dim": 16, "num_negatives": 20, **kwargs}
    return NPID(backbone, nn.Linear(32, kwargs["embedding_dim"]), num_samples, **kwargs)


def test_bank_update_is_the_normalised_moving_average():
    torch.manual_seed(0)
    bank = MemoryBank(10, 4, momentum=0.25)
    before = bank.bank.clone()
    values = torch.randn(2, 4)
    bank.update(torch.tensor([1, 6]), values)
    expected = F.normalize(0.25 * before[[1, 6]] + 0.75 * values, dim=1)
    assert torch.allclose(bank.bank[[1, 6]], expected)
    untouched = [i for i in range(10) if i not in (1, 6)]
    assert torch.equal(bank.bank[untouched], before[untouched])
    with pytest.raises(ValueError, match="update needs"):
        bank.update(torch.tensor([1]), torch.randn(1, 5))


def test_bank_fill_sets_every_row_to_a_unit_vector():
    bank = MemoryBank(10, 4)
    values = torch.randn(10, 4, dtype=torch.float64) * 3
    bank.fill(values)
    assert bank.bank.dtype == torch.float32
    torch.testing.assert_close(bank.bank, F.normalize(values.float(), dim=1))
    with pytest.raises(ValueError, match=r"fill needs \(10, 4\)"):
        bank.fill(torch.randn(9, 4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_bank_logits_of_half_precision_rows(dtype):
    # Rows from an autocast region meet the float32 bank: computed in the bank's dtype.
    torch.manual_seed(0)
    bank = MemoryBank(10, 4)
    v = F.normalize(torch.randn(3, 4), dim=1).to(dtype)
    indices, negatives = torch.tensor([0, 5, 9]), torch.tensor([1, 2, 3, 4])
    positive, negative = bank.logits(v, indices, negatives, 0.1)
    expected = bank.logits(v.float(), indices, negatives, 0.1)
    assert positive.dtype == negative.dtype == torch.float32
    torch.testing.assert_close((positive, negative), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bank_info_nce_is_the_cross_entropy_of_the_positive_among_the_sampled_rows(dtype):
    torch.manual_seed(0)
    bank = MemoryBank(10, 4)
    v = F.normalize(torch.randn(3, 4), dim=1)
    indices, negatives = torch.tensor([0, 5, 9]), torch.tensor([1, 2, 2, 4])
    positive, negative = bank.logits(v, indices, negatives, 0.1)
    expected = F.cross_entropy(
        torch.cat([positive.unsqueeze(1), negative], dim=1), torch.zeros(3, dtype=torch.long)
    )
    got = bank.info_nce(v.to(dtype), indices, negatives, 0.1)
    assert got.dtype == torch.float32
    tolerance = {} if dtype == torch.float32 else {"atol": 0.1, "rtol": 0}
    torch.testing.assert_close(got, expected, **tolerance)
    with pytest.raises(ValueError, match="embedding_dim=4"):
        bank.info_nce(v[:, :3], indices, negatives, 0.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_samples": 0, "dim": 4}, "num_samples"),
        ({"num_samples": 4, "dim": 0}, "dim"),
        ({"num_samples": 4, "dim": 4, "momentum": 1.0}, "momentum"),
    ],
)
def test_bank_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MemoryBank(**kwargs)


def test_nce_loss_matches_the_paper_formula():
    torch.manual_seed(0)
    pos, neg = torch.randn(5), torch.randn(5, 7)
    log_z, n = torch.tensor(2.0), 1000
    p_pos, p_neg = pos.exp() / math.exp(2.0), neg.exp() / math.exp(2.0)
    k_pn = 7 / n
    ref = -(torch.log(p_pos / (p_pos + k_pn)) + torch.log(k_pn / (p_neg + k_pn)).sum(1)).mean()
    assert torch.allclose(nce_loss(pos, neg, log_z, n), ref, rtol=1e-5)


@pytest.mark.parametrize("loss", ["softmax", "nce"])
def test_loss_falls_and_bank_follows_the_embeddings(loss):
    # Many rows, so that a batch's own entries are rarely drawn as its negatives.
    method = make(num_samples=4096, loss=loss)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(16, 1, 8, 8, generator=g)
    indices = torch.arange(16) * 3
    opt = torch.optim.Adam(method.parameters(), lr=1e-2)
    before = method.memory.bank.clone()
    losses = []
    for _ in range(25):
        out = method.training_step(Batch([images], indices=indices))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    # The median: a step whose random negatives include the batch's own entries spikes.
    assert torch.tensor(losses[-10:]).median() < 0.5 * losses[0]
    changed = (method.memory.bank != before).any(dim=1)
    assert changed[indices].all() and not changed[torch.arange(1, 48, 3)].any()
    assert bool(method.log_z_estimated) == (loss == "nce")


def test_nce_normaliser_is_fixed_after_the_first_batch():
    method = make(loss="nce")
    batch = Batch([torch.rand(8, 1, 8, 8)], indices=torch.arange(8))
    method.training_step(batch)
    first = method.log_z.clone()
    method.training_step(batch)
    assert torch.equal(method.log_z, first)


def test_state_dict_resumes_exactly():
    a = make()
    batch = Batch([torch.rand(8, 1, 8, 8)], indices=torch.arange(8))
    a.training_step(batch)
    b = make()
    b.load_state_dict(a.state_dict())
    torch.manual_seed(5)
    la = a.training_step(batch)["loss"]
    torch.manual_seed(5)
    lb = b.training_step(batch)["loss"]
    assert torch.equal(la, lb)
    assert torch.equal(a.memory.bank, b.memory.bank)


def test_bad_arguments_and_batches():
    with pytest.raises(ValueError, match="loss"):
        make(loss="infonce")
    with pytest.raises(ValueError, match="temperature"):
        make(temperature=0)
    with pytest.raises(ValueError, match="num_negatives"):
        make(num_negatives=0)
    with pytest.raises(ValueError, match="bank_init"):
        make(bank_init="zeros")
    with pytest.raises(ValueError, match="indices"):
        make().training_step(Batch([torch.rand(8, 1, 8, 8)]))
    mismatched = NPID(nn.Flatten(), nn.Linear(64, 16), 64, embedding_dim=8)
    with pytest.raises(ValueError, match="embedding_dim"):
        mismatched.training_step(Batch([torch.rand(8, 1, 8, 8)], indices=torch.arange(8)))
    with pytest.raises(ValueError, match="num_samples"):
        build_method("npid", (1, 8, 8))


def test_bank_can_start_from_the_networks_own_features():
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    method = make(bank_init="features")
    method.on_epoch_start(0, ImageData(images, None))
    with torch.no_grad():
        v = method.projection_head(method.backbone(method.clean_images(images)))
    torch.testing.assert_close(method.memory.bank, F.normalize(v, dim=1))
    # A fresh random bank by default; and later epochs never refill.
    default = make()
    before = default.memory.bank.clone()
    default.on_epoch_start(0, ImageData(images, None))
    method.on_epoch_start(1, ImageData(images.flip(0), None))
    assert torch.equal(default.memory.bank, before)
    torch.testing.assert_close(method.memory.bank, F.normalize(v, dim=1))


def test_trainer_passes_each_images_position(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (48, 1, 8, 8), dtype=torch.uint8, generator=g)
    trainer = Trainer(
        method="npid",
        dataset=(images, None),
        backbone_kwargs={"embedding_dim": 16, "width": 4},
        hparams={"embedding_dim": 8, "num_negatives": 16},
        batch_size=16,
        epochs=1,
        out=tmp_path,
        progress=False,
    )
    before = trainer.method.memory.bank.clone()
    trainer.fit()
    # Every image was in a batch once, so every row moved.
    assert (trainer.method.memory.bank != before).any(dim=1).all()
    assert trainer.build_config["num_samples"] == 48
