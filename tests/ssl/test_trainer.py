"""Trainer: exact resume, checkpoint errors, logs, bad input, the Python API; what a GPU
run depends on, checked on the CPU (issue 17): device selection, AMP, resume across devices,
tensors made on the batch's device, no host synchronisation in a step."""

import csv
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from metricssl.data import ImageFolder, resolve_data
from metricssl.ssl.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from metricssl.ssl.embed import embed_dataset
from metricssl.ssl.method import Batch, SSLMethod
from metricssl.ssl.monitor import CollapseWarning
from metricssl.ssl.registry import METHODS
from metricssl.ssl.trainer import Trainer
from tests.host_reads import host_read_sites
from tests.ssl.fake_cuda import FakeCuda, philox_state

SMALL = {
    "simclr": {"proj_hidden_dim": 32, "proj_output_dim": 16},
    "dcl": {"proj_hidden_dim": 32, "proj_output_dim": 16, "weighted": True},
    "moco": {"proj_hidden_dim": 32, "proj_output_dim": 16, "queue_size": 40},
    "byol": {"proj_hidden_dim": 32, "proj_output_dim": 16, "pred_hidden_dim": 32},
    "moco_v3": {"proj_hidden_dim": 32, "proj_output_dim": 16, "pred_hidden_dim": 32},
    "nnclr": {
        "proj_hidden_dim": 32,
        "proj_output_dim": 16,
        "pred_hidden_dim": 32,
        "queue_size": 40,
    },
    "simsiam": {"proj_hidden_dim": 32, "proj_output_dim": 16, "pred_hidden_dim": 8},
    "barlow_twins": {"proj_hidden_dim": 32, "proj_output_dim": 32},
    "vicreg": {"proj_hidden_dim": 32, "proj_output_dim": 32},
    "tico": {"proj_hidden_dim": 32, "proj_output_dim": 16},
    "mmcr": {"proj_hidden_dim": 32, "proj_output_dim": 16},
    "supervised": {"samples_per_class": 4},
    "npid": {"embedding_dim": 16, "num_negatives": 16},
    "pirl": {"embedding_dim": 16, "grid": 2, "tile_dim": 8, "num_negatives": 16, "tile_jitter": 0},
    "rotnet": {"head_hidden_dim": 32},
    "jigsaw": {
        "grid": 2,
        "num_permutations": 8,
        "tile_dim": 16,
        "head_hidden_dim": 32,
        "tile_jitter": 0,
    },
    "context_encoder": {"decoder_width": 4},
    "denoising_autoencoder": {"decoder_width": 4},
    "vae": {"latent_dim": 8, "decoder_width": 4},
    "mae": {"decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2},
    "swav": {
        "proj_hidden_dim": 32,
        "proj_output_dim": 16,
        "num_prototypes": 8,
        "freeze_prototypes_iters": 2,
    },
    "deepcluster": {"proj_hidden_dim": 32, "proj_output_dim": 16, "num_clusters": 4},
    "dino": {
        "proj_hidden_dim": 32,
        "proj_bottleneck_dim": 16,
        "output_dim": 64,
        "freeze_last_layer_iters": 2,
    },
}


# The named backbone's arguments: small_cnn's unless the method's default backbone is another.
BACKBONE_KWARGS = {"mae": {"width": 16, "depth": 1, "heads": 2}}  # vit_tiny, narrow and shallow


class Pickled:
    """An arbitrary object: safe loading must refuse to unpickle it."""


def tiny_data(n=120, classes=4, shape=(1, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    return images, torch.arange(n) % classes


def make(name, out, **kw):
    args = dict(
        dataset=tiny_data(),
        backbone_kwargs=BACKBONE_KWARGS.get(name, {"embedding_dim": 16, "width": 4}),
        hparams=SMALL[name],
        epochs=3,
        batch_size=16,
        steps_per_epoch=2,
        out=out,
        progress=False,
        knn_k=10,
        optimizer="sgd",
        lr=0.05,
    )
    args.update(kw)
    return Trainer(method=name, **args)


def check_resume_is_exact(name, tmp_path, **kw):
    """3 epochs straight == 1 epoch, a new Trainer resuming from last.pt, 2 more epochs."""
    straight = make(name, tmp_path / "a", **kw)
    straight.fit()
    make(name, tmp_path / "b", **kw).fit(epochs=1)
    resumed = make(name, tmp_path / "b", **kw)  # resume="auto" picks up last.pt
    assert resumed.epoch == 1 and resumed.step == 2
    assert resumed.resumed.changed == ()  # the same settings: nothing to allow
    resumed.fit()
    a, b = straight.method.state_dict(), resumed.method.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight.history[-1]["loss"] == resumed.history[-1]["loss"]
    return straight


@pytest.mark.parametrize("name", sorted(METHODS))
def test_resume_is_exact(name, tmp_path):
    straight = check_resume_is_exact(name, tmp_path)
    if name == "moco":
        assert int(straight.method.state_dict()["queue_filled"]) == 40


@pytest.mark.parametrize(
    "name, hparams, logged",
    [
        # One random rotation per image, and random tile offsets: more random draws to restore.
        ("rotnet", {"all_rotations": False}, "rotation_accuracy"),
        ("jigsaw", {"tile_jitter": None}, "jigsaw_accuracy"),
    ],
)
def test_pretext_tasks_resume_exactly_and_log_their_accuracy(name, hparams, logged, tmp_path):
    straight = check_resume_is_exact(name, tmp_path, hparams={**SMALL[name], **hparams})
    assert 0.0 <= straight.history[-1][logged] <= 1.0


def test_log_checkpoint_and_api(tmp_path):
    trainer = make("simclr", tmp_path, epochs=2)
    final = trainer.fit()
    for key in (
        "loss",
        "lr",
        "knn_accuracy",
        "embedding_std",
        "effective_rank",
        "collapse",
        "images_per_second",
        "augment_share",
        "epoch_seconds",
    ):
        assert key in final
    assert 0 <= final["knn_accuracy"] <= 1 and 0 <= final["augment_share"] <= 1
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[-1]["loss"]) == pytest.approx(final["loss"])
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))  # atomic write left nothing

    method, meta = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert meta["epoch"] == 2 and meta["method"] == "simclr"
    assert meta["metrics"]["loss"] == final["loss"]
    images = tiny_data()[0][:10]
    torch.testing.assert_close(embed_dataset(method, images), embed_dataset(trainer.method, images))
    assert isinstance(trainer.method.backbone, nn.Module)
    # Finished: a new fit() has nothing left to do and returns the final numbers.
    again = make("simclr", tmp_path, epochs=2)
    assert again.fit() == final


def test_checkpoint_errors(tmp_path):
    trainer = make("simclr", tmp_path / "run", epochs=1)
    trainer.fit()
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError, match="method 'simclr'.*runs 'byol'"):
        make("byol", tmp_path / "run", epochs=1)
    with pytest.raises(CheckpointError, match="differs .* in hparams"):
        make("simclr", tmp_path / "run", hparams={"temperature": 0.5, **SMALL["simclr"]})

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        read_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        make("simclr", tmp_path / "x", resume=truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(garbage)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "metricssl-ssl-checkpoint", "obj": Pickled()}, pickled)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(pickled)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a metricssl"):
        read_checkpoint(foreign)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError):
        make("simclr", tmp_path / "y", resume=tmp_path / "missing.pt")


def test_a_checkpoint_older_than_a_hyperparameter_loads_as_trained(tmp_path):
    # A PIRL run from before proj_hidden_dim and bank_init existed: linear heads, random bank.
    hp = {**SMALL["pirl"], "proj_hidden_dim": 0, "bank_init": "random"}
    make("pirl", tmp_path, epochs=1, hparams=hp).fit()
    path = tmp_path / "checkpoints" / "last.pt"
    state = read_checkpoint(path)
    for key in ("proj_hidden_dim", "bank_init"):
        del state["config"]["build"]["hparams"][key]
    save_checkpoint(state, path)
    method, _ = load_checkpoint(path)
    assert isinstance(method.projection_head, nn.Linear) and method.bank_init == "random"
    # The run resumes with the same settings, and refuses today's defaults (another model).
    resumed = make("pirl", tmp_path, epochs=2, hparams=hp, allow_changed_settings=True)
    assert resumed.epoch == 1
    resumed.fit()
    with pytest.raises(CheckpointError, match="in hparams"):
        make("pirl", tmp_path, epochs=3)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        Trainer(method="simclear", dataset=tiny_data(), out=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        Trainer(method="simclr", dataset="imagenet-xl", out=tmp_path)
    with pytest.raises(ValueError, match="unknown backbone"):
        Trainer(method="simclr", dataset=tiny_data(), backbone="vgg", out=tmp_path)
    with pytest.raises(ValueError, match="batch_size 1 is too small"):
        make("simclr", tmp_path, batch_size=1)
    with pytest.raises(ValueError, match="not enough for one optimizer step"):
        make("simclr", tmp_path, batch_size=100, accumulate_steps=2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        make("simclr", tmp_path, dataset=(torch.zeros(20, 8, 8, dtype=torch.uint8), None))
    with pytest.raises(ValueError, match="needs labels"):
        make("supervised", tmp_path, dataset=(tiny_data()[0], None))
    with pytest.raises(ValueError, match="multiple of samples_per_class"):
        make("supervised", tmp_path, batch_size=18)
    with pytest.raises(ValueError, match="for method 'supervised'"):
        make("simclr", tmp_path, loss="TripletMarginLoss")
    with pytest.raises(ValueError, match="amp"):
        make("simclr", tmp_path, amp="fp8")
    with pytest.raises(ValueError, match="fp16"):
        make("simclr", tmp_path, amp="fp16", device="cpu")
    trainer = make("simclr", tmp_path, epochs=1)
    with pytest.raises(ValueError, match=r"built for \(1, 8, 8\)"):
        embed_dataset(trainer.method, torch.zeros(4, 1, 28, 28, dtype=torch.uint8))


class ConstantBackbone(nn.Module):
    """Every image gets the same features: the collapse the diagnostics must flag."""

    def __init__(self):
        super().__init__()
        self.register_buffer("value", torch.ones(8))

    def forward(self, x):
        return self.value.expand(x.shape[0], -1)


class Collapsing(SSLMethod):
    name = "collapsing"

    def __init__(self):
        super().__init__(ConstantBackbone(), 8, views=lambda x, g: [x.float(), x.float()])
        self.head = nn.Linear(8, 4)

    def training_step(self, batch: Batch):
        return {"loss": self.head(self.backbone(batch.views[0])).pow(2).mean()}


def test_collapse_warning_and_custom_method(tmp_path):
    trainer = Trainer(
        method=Collapsing(),
        dataset=tiny_data(),
        epochs=1,
        batch_size=16,
        out=tmp_path,
        progress=False,
        knn_k=5,
        steps_per_epoch=1,
    )
    with pytest.warns(CollapseWarning, match="collapsed"):
        final = trainer.fit()
    assert final["collapse"] == 1.0 and final["effective_rank"] < 2
    with pytest.raises(CheckpointError, match="custom method"):
        load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    method, _ = load_checkpoint(tmp_path / "checkpoints" / "last.pt", method=Collapsing())
    assert isinstance(method, Collapsing)


def test_bf16_autocast_accumulation_and_lars_on_cpu(tmp_path):
    trainer = make("simclr", tmp_path, amp="bf16", accumulate_steps=2, optimizer="lars", epochs=1)
    final = trainer.fit()
    assert trainer.step == 2 and torch.isfinite(torch.tensor(final["loss"]))
    assert trainer.hyper["amp"] == "bfloat16"


def conv_weights(trainer):
    # A one-channel filter bank is both layouts at once; the others tell them apart.
    convs = [m for m in trainer.method.modules() if isinstance(m, nn.Conv2d)]
    return [m.weight for m in convs if m.in_channels > 1]


def test_memory_format(tmp_path):
    fast = make("simclr", tmp_path / "cl", epochs=1)  # "auto": channels-last on the CPU
    plain = make("simclr", tmp_path / "plain", epochs=1, memory_format="contiguous")
    assert fast.hyper["memory_format"] == "channels_last"
    assert plain.hyper["memory_format"] == "contiguous_format"
    assert len(conv_weights(fast)) == 3  # SmallCNN's layers after the first
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(fast))
    assert not any(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(plain))
    fast.fit()
    plain.fit()
    # The layout changes the order of float sums, nothing else.
    a, b = fast.method.state_dict(), plain.method.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    # A checkpoint is layout-free: the contiguous run resumes as channels-last.
    resumed = make("simclr", tmp_path / "plain", epochs=2, allow_changed_settings=True)
    assert resumed.epoch == 1 and resumed.hyper["memory_format"] == "channels_last"
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights(resumed))
    resumed.fit()
    # A backbone passed as a module may not survive channels-last: "auto" leaves it alone.
    backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten())
    custom = make("simclr", tmp_path / "custom", backbone=backbone, backbone_kwargs=None)
    assert custom.hyper["memory_format"] == "contiguous_format"
    with pytest.raises(ValueError, match="memory_format"):
        make("simclr", tmp_path / "bad", memory_format="nhwc")


@pytest.mark.parametrize(
    "device, amp, expected",
    [
        ("cpu", None, torch.channels_last),
        ("cuda", torch.bfloat16, torch.channels_last),
        ("cuda", torch.float16, torch.channels_last),
        ("cuda", None, torch.contiguous_format),  # fp32 on CUDA: no tensor-core NHWC kernels
    ],
)
def test_auto_memory_format_by_device_and_amp(tmp_path, device, amp, expected):
    trainer = make("simclr", tmp_path, epochs=1)
    trainer.device, trainer.amp_dtype = torch.device(device), amp  # the rule alone, no GPU
    assert trainer._memory_format("auto") == expected
    # A module object, or a spec (possibly the user's code): contiguous.
    for backbone in (None, "tests.zoo_nets:TinyNet"):
        trainer.build_config = {**trainer.build_config, "backbone": backbone}
        assert trainer._memory_format("auto") == torch.contiguous_format


def test_unlabelled_data_gets_diagnostics_without_knn(tmp_path):
    images, _ = tiny_data()
    trainer = make("vicreg", tmp_path, dataset=(images, None), epochs=1)
    final = trainer.fit()
    assert "knn_accuracy" not in final and "effective_rank" in final
    assert len(trainer.train_data) == len(images)


def test_supervised_batches_are_m_per_class(tmp_path):
    images, labels = tiny_data(n=160, classes=8)
    hp = {"samples_per_class": "auto", "miner": "MultiSimilarityMiner"}
    trainer = make("supervised", tmp_path, dataset=(images, labels), batch_size=16, hparams=hp)
    assert trainer.samples_per_class == 4  # 16 images of 8 classes: 4 classes x 4
    batches = trainer._epoch_batches(0)
    for idx in batches:
        counts = torch.bincount(trainer.train_data.labels[idx])
        assert sorted(counts[counts > 0].tolist()) == [4, 4, 4, 4]
    # The order is a function of (seed, epoch): the same again, different next epoch.
    assert torch.equal(batches, trainer._epoch_batches(0))
    assert not torch.equal(batches, trainer._epoch_batches(1))
    final = trainer.fit()
    assert "mined" in final and torch.isfinite(torch.tensor(final["loss"]))


class PairsPerClass(SSLMethod):
    """A custom labelled method: it needs labels and two images of each class per batch,
    and says so through the SSLMethod contract alone (no Supervised in its ancestry)."""

    name = "pairs_per_class"
    needs_labels = True
    num_views = 1

    def __init__(self):
        backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
        super().__init__(backbone, 8, views=lambda x, g: [x.float() / 255])
        self.seen: list[torch.Tensor] = []

    def samples_per_class_in(self, batch_size, num_classes):
        return 2

    def training_step(self, batch: Batch):
        self.seen.append(batch.labels.cpu())
        embeddings = self.backbone(batch.views[0])
        same = batch.labels[:, None] == batch.labels[None, :]
        return {"loss": (torch.cdist(embeddings, embeddings) * same).mean()}


def test_a_custom_method_with_labels_trains_on_its_own_batches(tmp_path):
    args = dict(epochs=1, batch_size=8, steps_per_epoch=3, out=tmp_path, progress=False, knn_k=5)
    trainer = Trainer(method=PairsPerClass(), dataset=tiny_data(n=160, classes=8), **args)
    trainer.fit()
    assert len(trainer.method.seen) == 3
    for labels in trainer.method.seen:
        counts = torch.bincount(labels)
        assert sorted(counts[counts > 0].tolist()) == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="needs labels"):
        Trainer(method=PairsPerClass(), dataset=(tiny_data()[0], None), **args)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["simclr", "moco", "byol"])
def test_cuda_amp_run_and_resume(name, tmp_path):
    straight = make(name, tmp_path / "a", device="cuda", amp="auto")
    straight.fit()
    make(name, tmp_path / "b", device="cuda", amp="auto").fit(epochs=1)
    resumed = make(name, tmp_path / "b", device="cuda", amp="auto")
    resumed.fit()
    assert straight.hyper["amp"] in ("bfloat16", "float16")
    a, b = straight.method.state_dict(), resumed.method.state_dict()
    # cuDNN kernels are not bit-deterministic run to run: equal up to rounding.
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), rtol=1e-3, atol=1e-4)


def test_supervised_loss_and_miner_by_name(tmp_path):
    trainer = make("supervised", tmp_path, loss="TripletMarginLoss", hparams={}, epochs=1)
    assert type(trainer.method.loss_fn).__name__ == "TripletMarginLoss"
    assert trainer.method.miner is None
    trainer = make(
        "supervised", tmp_path / "b", loss="ContrastiveLoss", miner="BatchHardMiner", epochs=1
    )
    assert type(trainer.method.miner).__name__ == "BatchHardMiner"
    trainer.fit()


# -- what a GPU run depends on, checked on the CPU (issue 17) ----------------------------------


def first_batches(trainer, count=1):
    """The first ``count`` batches of epoch 0 as the training loop hands them to a step."""
    trainer.method.on_epoch_start(0, trainer.train_data)
    trainer.model.train()
    order = trainer._epoch_batches(0)
    batches = []
    for micro in range(count):
        indices = order[micro % len(order)]
        images, labels = next(iter(trainer.train_data.batches(indices, trainer.batch_size)))
        views = trainer.method.make_views(images, trainer.augment_generator)
        batches.append(Batch(views, labels, indices))
    return batches


def backbone_dtypes(method):
    """The dtypes of the outputs of the backbone and of each of its modules, as a step runs
    them (MAE runs the ViT's pieces on the visible patches, never its whole forward)."""
    dtypes = []
    for module in method.backbone.modules():
        module.register_forward_hook(lambda module, x, out: dtypes.append(out.dtype))
    return dtypes


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_an_epoch_under_cpu_bf16_autocast(name, tmp_path):
    # 16-px images: at 8 px, SwAV's and DINO's 4-px local crops reach SmallCNN's last
    # convolution as 1x1 maps, whose bf16 weight gradient torch 2.13's CPU kernel fills with
    # garbage (NaN or 1e30, differing run to run).
    trainer = make(
        name,
        tmp_path,
        dataset=tiny_data(n=64, shape=(1, 16, 16)),
        amp="bf16",
        epochs=1,
        steps_per_epoch=1,
    )
    dtypes = backbone_dtypes(trainer.method)
    final = trainer.fit()
    assert trainer.hyper["amp"] == "bfloat16"
    assert torch.bfloat16 in dtypes  # the training step ran under autocast
    assert math.isfinite(final["loss"])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_steps_under_cpu_fp16_autocast(name, tmp_path):
    # amp="fp16" is refused on the CPU (no use there), but CPU autocast runs float16 as
    # CUDA's does: the methods' dtype handling is checked for both half types.
    trainer = make(name, tmp_path, dataset=tiny_data(n=64, shape=(1, 16, 16)), epochs=1)
    (batch,) = first_batches(trainer)
    dtypes = backbone_dtypes(trainer.method)
    with torch.autocast("cpu", dtype=torch.float16):
        out = trainer.model(batch)
    out["loss"].backward()
    assert torch.float16 in dtypes
    assert all(torch.isfinite(v).all() for v in out.values())
    grads = [p.grad for p in trainer.method.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_step_makes_its_tensors_on_the_batch_device(name, tmp_path):
    """A tensor made without ``device=`` lands on the default device: on a GPU run, the CPU,
    away from the batch (issue 17: Supervised's mined count, which the epoch's mean then
    stacked with the CUDA loss). With "meta" as the default device and the batch on the
    CPU, such a tensor shows the same way: on the wrong device, or failing an op."""
    trainer = make(name, tmp_path, epochs=1)
    (batch,) = first_batches(trainer)
    with torch.device("meta"):
        out = trainer._forward_backward(batch, 0, check=False)
    assert {k: v.device.type for k, v in out.items()} == dict.fromkeys(out, "cpu")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_training_step_does_not_wait_for_the_device(name, tmp_path, monkeypatch):
    """The Trainer's step (forward, backward, optimizer, schedule, momentum update) and the
    methods' own code read no tensor value on the host: on a GPU each read waits for every
    queued kernel. Reads inside the losses, miners and argument checks are not counted (the
    supervised step's default MultiSimilarityMiner and loss make some), nor NPID's
    ``loss="nce"``, which asks each step whether its normaliser is estimated."""
    trainer = make(name, tmp_path, epochs=1)
    if name == "supervised":
        assert trainer.method.miner is not None  # the default set-up mines
    batches = first_batches(trainer, count=3)
    with host_read_sites(monkeypatch) as reads:
        for micro, batch in enumerate(batches):
            out = trainer._forward_backward(batch, micro, check=False)
    assert trainer.step == 3 and "loss" in out
    ssl_package = str(Path(Trainer.__module__.replace(".", "/")).parent)
    assert [r for r in reads if ssl_package in r[1]] == []


def forge_cuda_run(path, record_devices=True):
    """Rewrite a CPU run's checkpoint as an fp16 run on cuda:1 of a 2-GPU machine writes it
    (a CUDA generator's state is 16 bytes; checkpoints before issue 17 did not record the
    generator's device)."""
    state = read_checkpoint(path)
    rng = state["rng"][0]
    rng["augment"] = philox_state(11)
    rng["global"]["cuda"] = [philox_state(20), philox_state(21)]
    if record_devices:
        rng["augment_device"], rng["global"]["device"] = "cuda", "cuda:1"
    else:
        rng.pop("augment_device", None)
        rng["global"].pop("device", None)
    state["scaler"] = {
        "scale": 1024.0,
        "growth_factor": 2.0,
        "backoff_factor": 0.5,
        "growth_interval": 2000,
        "_growth_tracker": 3,
    }
    state["config"]["training"]["amp"] = "float16"
    save_checkpoint(state, path)


@pytest.mark.parametrize("record_devices", [True, False])
def test_a_cuda_run_resumes_on_the_cpu(tmp_path, record_devices):
    make("simclr", tmp_path, epochs=2).fit(epochs=1)
    forge_cuda_run(tmp_path / "checkpoints" / "last.pt", record_devices)
    resumed = []
    for _ in range(2):
        with pytest.warns(UserWarning, match=r"augmentation generator \(saved on .*cpu\)"):
            resumed.append(make("simclr", tmp_path, epochs=2, allow_changed_settings=True))
    assert all(t.epoch == 1 and t.step == 2 for t in resumed)
    # The augmentations restart from (seed, epoch): every resume continues the same way.
    finals = [t.fit() for t in resumed]
    assert finals[0]["loss"] == finals[1]["loss"]
    a, b = (t.method.state_dict() for t in resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_with_other_settings_is_refused_listing_them(tmp_path):
    make("simclr", tmp_path, epochs=2, lr=0.06).fit(epochs=1)
    path = tmp_path / "checkpoints" / "last.pt"
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as err:
        make("simclr", tmp_path, epochs=3, lr=0.5, seed=7)
    message = str(err.value)
    assert message.startswith(f"{path} was trained with other settings: ")
    for change in ("lr 0.06 -> 0.5", "epochs 2 -> 3", "seed 0 -> 7"):
        assert change in message
    assert "allow_changed_settings=True" in message and "resume=False" in message
    assert path.read_bytes() == before
    # Another optimizer is refused even when changes are allowed: its state would not fit.
    with pytest.raises(CheckpointError, match="optimizer cannot change"):
        make("simclr", tmp_path, epochs=2, lr=0.06, optimizer="adam", allow_changed_settings=True)
    with pytest.raises(TypeError, match="allow_changed_settings"):
        make("simclr", tmp_path, epochs=2, lr=0.06, allow_changed_settings="yes")


def test_allowed_changes_are_applied_and_said(tmp_path, capsys):
    make("simclr", tmp_path, epochs=2, lr=0.06, weight_decay=0.0).fit(epochs=1)
    path = tmp_path / "checkpoints" / "last.pt"
    capsys.readouterr()
    trainer = make(
        "simclr",
        tmp_path,
        epochs=4,
        lr=0.5,
        weight_decay=1e-3,
        allow_changed_settings=True,
        progress=True,
    )
    assert trainer.resumed.epoch == 1 and trainer.resumed.step == 2
    assert trainer.resumed.changed == (
        "lr 0.06 -> 0.5",
        "weight_decay 0.0 -> 0.001",
        "epochs 2 -> 4",
    )
    line = f"resuming {path} at epoch 1/4 (step 2) with changed settings: lr 0.06 -> 0.5;"
    assert line in capsys.readouterr().out
    # The new rate and decay are what the optimizer uses; the schedule spans the new total.
    assert trainer.scheduler.base_lrs == [0.5] * len(trainer.optimizer.param_groups)
    assert trainer.scheduler.total_steps == 8 and trainer.scheduler.last_step == 2
    for group in trainer.optimizer.param_groups:
        assert group["lr"] == pytest.approx(0.5 * trainer.scheduler.factor())
        assert group["weight_decay"] == 1e-3
    trainer.fit(epochs=2)
    assert read_checkpoint(path)["config"]["training"]["lr"] == 0.5
    # The checkpoint now records the new settings: the same run resumes without asking.
    again = make("simclr", tmp_path, epochs=4, lr=0.5, weight_decay=1e-3)
    assert again.epoch == 2 and again.resumed.changed == ()


def test_a_fresh_run_has_resumed_nothing(tmp_path):
    assert make("simclr", tmp_path, epochs=1).resumed is None


def test_a_corrupted_random_state_is_a_checkpoint_error(tmp_path):
    make("simclr", tmp_path, epochs=2).fit(epochs=1)
    path = tmp_path / "checkpoints" / "last.pt"
    state = read_checkpoint(path)
    state["rng"][0]["augment"] = torch.zeros(10, dtype=torch.uint8)  # "cpu", of no size
    save_checkpoint(state, path)
    with pytest.raises(CheckpointError, match=r"last\.pt: .* does not fit a cpu generator"):
        make("simclr", tmp_path, epochs=2)


def test_an_fp16_continuation_of_a_run_without_scaler(tmp_path):
    make("simclr", tmp_path / "run", epochs=2).fit(epochs=1)  # float32: an empty scaler state
    trainer = make("simclr", tmp_path / "fp16", epochs=2)
    # An enabled scaler, as an fp16 run on a GPU has one (loading does not depend on the device).
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    trainer.load_state(read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt"))
    assert trainer.epoch == 1 and trainer.scaler.get_scale() == 1024.0


def test_device_and_backend_under_torchrun(monkeypatch):
    """``torchrun --nproc-per-node 4 metricssl train --device cuda``: rank 2 trains on
    cuda:2 (not cuda:0, the current device of every fresh process), with NCCL; a CPU device,
    named or a torch.device, uses gloo."""
    cuda = FakeCuda(monkeypatch, count=4)
    backends = []
    monkeypatch.setattr(
        torch.distributed, "init_process_group", lambda backend, **kw: backends.append(backend)
    )
    for key, value in (("WORLD_SIZE", "4"), ("RANK", "2"), ("LOCAL_RANK", "2")):
        monkeypatch.setenv(key, value)
    trainer = Trainer.__new__(Trainer)  # only the device set-up: nothing runs on fake GPUs
    for device in ("cuda", "auto", torch.device("cuda")):
        trainer._setup_distributed(device)
        assert trainer.device == torch.device("cuda", 2) and cuda.current == 2
        assert backends.pop() == "nccl" and trainer._owns_process_group
    for device in ("cpu", torch.device("cpu")):
        trainer._setup_distributed(device)
        assert trainer.device == torch.device("cpu") and backends.pop() == "gloo"


def colour_folder(root, per_class=12):
    """Two classes of 12x10 (width x height) RGB PNGs, each image one colour (so its grey
    value after any resize is Pillow's luma of that colour)."""
    pil = pytest.importorskip("PIL.Image")
    g = torch.Generator().manual_seed(0)
    colours = {}
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            rgb = tuple(int(v) for v in torch.randint(0, 256, (3,), generator=g))
            pil.new("RGB", (12, 10), rgb).save(root / cls / f"{i}.png")
            colours[f"{cls}/{i}.png"] = pil.new("RGB", (1, 1), rgb).convert("L").getpixel((0, 0))
    return root, colours


@pytest.mark.filterwarnings("ignore::metricssl.ssl.monitor.CollapseWarning")
def test_image_size_and_mode_train_a_folder_at_that_size_and_resume_only_at_it(tmp_path):
    root, colours = colour_folder(tmp_path / "photos")
    args = dict(dataset=str(root), image_size=16, mode="L", epochs=2, val_fraction=0)
    trainer = make("simclr", tmp_path / "run", **args)
    assert trainer.input_shape == (1, 16, 16)
    images, _ = next(trainer.train_data.batches(torch.arange(24), 24))
    assert images.shape == (24, 1, 16, 16) and images.dtype == torch.uint8
    # Each image is one grey value: its colour's luma (the folder's order: a/0, a/1, ...).
    assert torch.equal(images, images[:, :, :1, :1].expand_as(images))
    order = [f"{path.parent.name}/{path.name}" for path, _ in ImageFolder(root).samples]
    assert images[:, 0, 0, 0].tolist() == [colours[name] for name in order]
    trainer.fit(epochs=1)
    recorded = read_checkpoint(trainer.checkpoint_path)["config"]["training"]
    assert recorded["image_size"] == [16, 16] and recorded["mode"] == "L"
    # The same settings resume (an int and its (height, width) pair are one size).
    resumed = make("simclr", tmp_path / "run", **{**args, "image_size": (16, 16)})
    assert resumed.epoch == 1 and resumed.hyper["image_size"] == recorded["image_size"]
    for changed in ({"image_size": 12}, {"mode": "RGB"}):
        with pytest.raises(CheckpointError, match="input_shape"):
            make("simclr", tmp_path / "run", **{**args, **changed})


def test_a_bad_image_size_or_mode_is_refused_naming_it(tmp_path):
    for image_size, error in ((0, ValueError), ("16", TypeError), ((16,), TypeError)):
        with pytest.raises(error, match="image_size"):
            make("simclr", tmp_path, image_size=image_size)
    with pytest.raises(ValueError, match="mode"):
        make("simclr", tmp_path, mode="CMYK")
    with pytest.raises(ValueError, match="image_size and mode"):
        make("simclr", tmp_path, dataset=resolve_data(tiny_data()), image_size=8)
