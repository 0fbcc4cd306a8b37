"""Every loss and regularizer under autocast in float16 and bfloat16 gives its float32 value
(within half precision) and finite gradients: on the CPU always, under ``torch.autocast("cuda")``
when a GPU is present (issue 17: dtype assumptions break only under autocast). The cases are
the loss benchmark's (one constructor and input layout per PML class), so a new loss is covered
when it is benchmarked."""

import pytest
import torch

from benchmarks.bench_losses import CASES, call_loss, find_class, make_inputs

LOSSES = [c for c in CASES.values() if c.kind != "miner"]
N, DIM, PER_CLASS, SEED = 64, 32, 8, 0
# Half precision keeps ~3 (bf16) or ~4 (fp16) significant digits through a few reductions.
TOLERANCE = {torch.float16: dict(rtol=2e-2, atol=2e-2), torch.bfloat16: dict(rtol=6e-2, atol=6e-2)}
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
]


def loss_and_gradient(case, device, dtype):
    emb, labels = make_inputs(case, N, DIM, PER_CLASS, SEED, device)
    torch.manual_seed(SEED)  # learnable weights (proxies, centres) start the same every time
    module = find_class("ours", case)(**case.arguments(N, DIM, PER_CLASS)).to(device)
    leaf = emb.clone().requires_grad_(True)
    with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = call_loss(case, module, leaf, labels)
    loss.float().backward()
    return loss, leaf.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", LOSSES, ids=[c.name for c in LOSSES])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_loss_under_autocast_matches_float32(case, dtype, device, one_thread):
    reference, _ = loss_and_gradient(case, device, None)
    loss, grad = loss_and_gradient(case, device, dtype)
    assert loss.device.type == device and loss.ndim == 0
    assert torch.isfinite(loss) and grad is not None and torch.isfinite(grad).all()
    torch.testing.assert_close(loss.float(), reference.float(), **TOLERANCE[dtype])
