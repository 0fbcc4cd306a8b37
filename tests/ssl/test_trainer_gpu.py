"""The Trainer on CUDA (issue 17): AMP runs of the methods with memory banks, clusters,
queues and miners, resume on CUDA and across devices, CrossBatchMemory under CUDA autocast,
and two processes joined by NCCL. Skipped without CUDA (the NCCL test without 2 GPUs)."""

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from metricssl.losses.contrastive_loss import ContrastiveLoss
from metricssl.losses.cross_batch_memory import CrossBatchMemory
from metricssl.ssl.memory_bank import MemoryBank
from metricssl.ssl.method import Batch, SSLMethod
from metricssl.ssl.trainer import Trainer
from tests.ssl.test_trainer import make, tiny_data

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def skip_unsupported(amp: str) -> None:
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("name", ["supervised", "swav", "dino", "npid", "deepcluster"])
def test_one_epoch_with_amp(name, amp, tmp_path):
    skip_unsupported(amp)
    trainer = make(name, tmp_path, device="cuda", amp=amp, epochs=1)
    final = trainer.fit()
    assert trainer.device.type == "cuda"
    assert all(p.is_cuda for p in trainer.method.parameters())
    assert math.isfinite(final["loss"]) and 0 <= final["knn_accuracy"] <= 1
    if name == "supervised":
        assert math.isfinite(final["mined"])  # the miner's count, logged next to the CUDA loss


@pytest.mark.parametrize("name", ["supervised", "swav", "npid"])
def test_resume_on_cuda(name, tmp_path):
    straight = make(name, tmp_path / "a", device="cuda", amp="auto")
    straight.fit()
    make(name, tmp_path / "b", device="cuda", amp="auto").fit(epochs=1)
    resumed = make(name, tmp_path / "b", device="cuda", amp="auto")
    assert resumed.epoch == 1
    resumed.fit()
    a, b = straight.method.state_dict(), resumed.method.state_dict()
    # cuDNN kernels are not bit-deterministic run to run: equal up to rounding (in bf16).
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), rtol=1e-2, atol=1e-3)


def test_a_run_moves_from_the_cpu_to_cuda_and_back(tmp_path):
    make("supervised", tmp_path, device="cpu").fit(epochs=1)
    with pytest.warns(UserWarning, match="augmentation generator"):
        on_gpu = make(
            "supervised", tmp_path, device="cuda", amp="auto", allow_changed_settings=True
        )
    assert on_gpu.epoch == 1
    on_gpu.fit(epochs=2)
    with pytest.warns(UserWarning, match="augmentation generator"):
        on_cpu = make("supervised", tmp_path, device="cpu", allow_changed_settings=True)
    assert on_cpu.epoch == 2
    final = on_cpu.fit()
    assert on_cpu.epoch == 3 and math.isfinite(final["loss"])


class CpuCount(SSLMethod):
    """Logs a value made on the CPU next to a loss on the GPU."""

    name = "cpu_count"

    def __init__(self):
        backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
        super().__init__(backbone, 8, views=lambda x, g: [x.float() / 255, x.float() / 255])

    def training_step(self, batch: Batch):
        loss = self.backbone(batch.views[0]).pow(2).mean()
        return {"loss": loss, "count": torch.tensor(float(batch.views[0].shape[0]))}


def test_epoch_means_of_values_on_several_devices(tmp_path):
    trainer = Trainer(
        method=CpuCount(),
        dataset=tiny_data(),
        device="cuda",
        epochs=1,
        batch_size=16,
        steps_per_epoch=2,
        out=tmp_path,
        progress=False,
        knn_k=5,
    )
    final = trainer.fit()
    assert final["count"] == 16.0 and math.isfinite(final["loss"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cross_batch_memory_under_cuda_autocast(dtype):
    skip_unsupported("bf16" if dtype == torch.bfloat16 else "fp16")
    torch.manual_seed(0)
    model = nn.Linear(6, 8).cuda()
    loss_fn = CrossBatchMemory(ContrastiveLoss(), embedding_size=8, memory_size=24)
    for _ in range(4):  # 32 rows through a memory of 24: it wraps around
        x = torch.randn(8, 6, device="cuda")
        labels = torch.randint(0, 3, (8,), device="cuda")
        with torch.autocast("cuda", dtype=dtype):
            embeddings = model(x)
            loss = loss_fn(embeddings, labels)
        assert embeddings.dtype == dtype
        loss.backward()
        assert torch.isfinite(loss)
    assert loss_fn.embedding_memory.is_cuda and loss_fn.embedding_memory.dtype == dtype
    assert torch.isfinite(model.weight.grad).all()


def test_memory_bank_samples_with_a_cpu_generator():
    bank = MemoryBank(100, 8).cuda()
    drawn = [bank.sample(20, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert drawn[0].is_cuda and torch.equal(drawn[0], drawn[1])
    assert torch.equal(
        drawn[0].cpu(), torch.randint(100, (20,), generator=torch.Generator().manual_seed(3))
    )


# -- two processes, one GPU each, joined by NCCL as under torchrun --------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nccl_rank(rank: int, out_dir: str, port: int) -> None:
    """One torchrun process: its environment, then the Trainer does the rest."""
    os.environ.update(
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    args = dict(
        method="supervised",
        dataset=tiny_data(),
        backbone_kwargs={"embedding_dim": 16, "width": 4},
        hparams={"samples_per_class": 4},
        epochs=2,
        batch_size=8,  # per process: a global batch of 16 = 4 classes x 4
        steps_per_epoch=2,
        out=os.path.join(out_dir, "run"),
        progress=False,
        knn_k=10,
        device="cuda",
        amp="auto",
    )
    first = Trainer(**args)  # starts the NCCL group (and destroys it in close())
    first.fit(epochs=1)
    trainer = Trainer(**args)  # in the same group, resumes from epoch 1
    result = {
        "device": str(trainer.device),
        "backend": dist.get_backend(),
        "resumed_from": trainer.epoch,
    }
    final = trainer.fit()
    result["loss"] = final["loss"]
    result["fingerprint"] = sum(float(p.double().sum()) for p in trainer.method.parameters())
    first.close()
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_processes_with_nccl(tmp_path):
    mp.start_processes(
        _nccl_rank, args=(str(tmp_path), _free_port()), nprocs=2, start_method="spawn"
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for r, result in enumerate(ranks):
        assert result["device"] == f"cuda:{r}"  # LOCAL_RANK, not cuda:0 for both
        assert result["backend"] == "nccl"
        assert result["resumed_from"] == 1
    assert ranks[0]["loss"] == ranks[1]["loss"]  # the logged loss is the mean over ranks
    assert ranks[0]["fingerprint"] == pytest.approx(ranks[1]["fingerprint"], rel=1e-6)
