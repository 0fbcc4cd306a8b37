import pytest
import torch

from metricssl.ssl.amp import autocast_dtype, native_bf16


@pytest.fixture
def gpu(monkeypatch):
    """torch.cuda answering as a machine whose GPUs have the capability set in ``caps``;
    is_bf16_supported says True, as torch's does on a V100 or T4 (emulation)."""
    caps = {}
    asked = []

    def get_device_capability(device=None):
        asked.append(device)
        index = 0 if device is None or device.index is None else device.index
        return caps[index]

    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.version, "hip", None)
    return caps, asked


@pytest.mark.parametrize(
    "capability, expected",
    [
        ((7, 0), torch.float16),  # V100: bf16 only emulated
        ((7, 5), torch.float16),  # T4
        ((6, 1), torch.float16),
        ((8, 0), torch.bfloat16),  # A100
        ((8, 6), torch.bfloat16),
        ((9, 0), torch.bfloat16),  # H100
    ],
)
def test_auto_picks_bf16_only_where_native(gpu, capability, expected):
    caps, _ = gpu
    caps[0] = capability
    assert autocast_dtype("auto", "cuda") == expected
    assert autocast_dtype("auto", torch.device("cuda:0")) == expected


def test_auto_asks_about_the_given_device(gpu):
    caps, asked = gpu
    caps.update({0: (9, 0), 1: (7, 0)})
    assert autocast_dtype("auto", "cuda:1") == torch.float16
    assert autocast_dtype("auto", "cuda:0") == torch.bfloat16
    assert [d.index for d in asked] == [1, 0]


def test_rocm_is_native(gpu, monkeypatch):
    caps, asked = gpu
    monkeypatch.setattr(torch.version, "hip", "6.2")
    assert native_bf16("cuda") and autocast_dtype("auto", "cuda") == torch.bfloat16
    assert asked == []


def test_explicit_modes_and_cpu(gpu):
    caps, asked = gpu
    caps[0] = (7, 0)
    assert autocast_dtype("bf16", "cuda") == torch.bfloat16  # asked for: given, emulated or not
    assert autocast_dtype("fp16", "cuda") == torch.float16
    assert autocast_dtype("off", "cuda") is None
    assert autocast_dtype("auto", "cpu") is None
    assert autocast_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="fp16"):
        autocast_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="amp"):
        autocast_dtype("fp8", "cuda")
