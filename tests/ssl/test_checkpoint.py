"""Checkpoint files: the SHA-256 stored at save time refuses a file whose bytes changed
(issue 19), leftovers of killed saves do not pile up. Random states of a checkpoint restored
on another device set-up (issue 17): a CUDA run resumed on a CPU machine, a machine with
fewer GPUs, another GPU. The CUDA side is ``FakeCuda``; the states are forged as a CUDA run
writes them."""

import random

import numpy as np
import pytest
import torch

from metricssl.core.atomic import temp_path_for
from metricssl.ssl.checkpoint import (
    CheckpointError,
    capture_rng_state,
    read_checkpoint,
    restore_generator,
    restore_rng_state,
    save_checkpoint,
    settings_differences,
    training_changes,
)
from tests.ssl.fake_cuda import FakeCuda, philox_state


def cuda_run_state(n_gpus: int, device: str | None) -> dict:
    """capture_rng_state() of a run on ``device`` on a machine with ``n_gpus`` GPUs."""
    state = capture_rng_state()
    state["cuda"] = [philox_state(100 + i) for i in range(n_gpus)]  # get_rng_state_all()
    if device is not None:
        state["device"] = device
    return state


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_cpu_streams_are_always_restored():
    state = cuda_run_state(2, "cuda:0")
    expected = draws()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    assert restore_rng_state(state, torch.device("cpu"))  # no CUDA here: nothing else to do
    assert draws() == expected


def test_fewer_gpus_than_the_saved_run(monkeypatch):
    # Saved by a run on cuda:3 of a 4-GPU machine, resumed on cuda:1 of a 2-GPU machine.
    cuda = FakeCuda(monkeypatch, count=2)
    state = cuda_run_state(4, "cuda:3")
    assert restore_rng_state(state, torch.device("cuda", 1))
    assert cuda.rng_states.keys() == {0, 1}  # no state is set on a GPU that is not here
    assert torch.equal(cuda.rng_states[0], state["cuda"][0])
    # The training GPU continues the stream the saved run drew from, on whichever GPU.
    assert torch.equal(cuda.rng_states[1], state["cuda"][3])


def test_more_gpus_than_the_saved_run(monkeypatch):
    cuda = FakeCuda(monkeypatch, count=4)
    state = cuda_run_state(1, None)  # no recorded device: GPU i continues GPU i's stream
    assert restore_rng_state(state, torch.device("cuda", 0))
    assert cuda.rng_states.keys() == {0}
    assert not restore_rng_state(state, torch.device("cuda", 2))  # nothing saved for it


def test_a_cpu_run_has_no_cuda_stream_to_continue(monkeypatch):
    FakeCuda(monkeypatch, count=1)
    state = capture_rng_state(torch.device("cpu"))
    assert "cuda" not in state and state["device"] == "cpu"
    assert not restore_rng_state(state, torch.device("cuda", 0))
    assert restore_rng_state(state, torch.device("cpu"))


def test_bad_states_are_checkpoint_errors():
    state = capture_rng_state()
    with pytest.raises(CheckpointError, match="torch CPU random state"):
        restore_rng_state({**state, "torch": philox_state(1)})
    with pytest.raises(CheckpointError, match="CUDA random states"):
        restore_rng_state({**state, "cuda": [torch.zeros(16)]})


def test_generators_are_restored_only_from_their_own_device_type():
    saved = torch.Generator().manual_seed(7)
    saved_draw = torch.rand(3, generator=torch.Generator().set_state(saved.get_state()))
    g = torch.Generator().manual_seed(1)
    assert restore_generator(g, saved.get_state(), "cpu")
    assert torch.equal(torch.rand(3, generator=g), saved_draw)
    # A CUDA generator's state, recorded as such or (older checkpoints) recognised by size.
    for device_type in ("cuda", None):
        g = torch.Generator().manual_seed(1)
        assert not restore_generator(g, philox_state(7), device_type)
        assert torch.equal(g.get_state(), torch.Generator().manual_seed(1).get_state())
    with pytest.raises(CheckpointError, match="does not fit a cpu generator"):
        restore_generator(torch.Generator(), philox_state(7), "cpu")


def payload(n: int = 4096) -> dict:
    weights = torch.arange(n, dtype=torch.float32)
    return {"method": "simclr", "config": {"build": None}, "model": {"w": weights}}


def test_checksummed_checkpoint_round_trips_and_stays_a_torch_file(tmp_path):
    path = save_checkpoint(payload(), tmp_path / "last.pt")
    assert torch.equal(read_checkpoint(path)["model"]["w"], payload()["model"]["w"])
    # the checksum lives in the zip comment: plain torch still reads the file
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], payload()["model"]["w"])


def test_flipped_bytes_in_the_middle_are_refused(tmp_path):
    path = save_checkpoint(payload(), tmp_path / "last.pt")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the tensor's data: torch alone loads other weights
    data[middle] ^= 0xFF
    data[middle + 1] ^= 0x0F
    path.write_bytes(bytes(data))
    unverified = read_checkpoint(path, verify=False)["model"]["w"]
    assert not torch.equal(unverified, payload()["model"]["w"])
    with pytest.raises(CheckpointError, match="corrupted: its SHA-256 is"):
        read_checkpoint(path)


def test_a_checkpoint_without_checksum_is_refused_unless_asked(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format": "metricssl-ssl-checkpoint", "version": 1, **payload()}, path)
    with pytest.raises(CheckpointError, match="carries no checksum.*verify=False"):
        read_checkpoint(path)
    assert read_checkpoint(path, verify=False)["method"] == "simclr"
    save_checkpoint(read_checkpoint(path, verify=False), path)  # as the error message says
    assert read_checkpoint(path)["method"] == "simclr"
    with pytest.raises(TypeError, match="verify must be a bool"):
        read_checkpoint(path, verify=1)


def test_a_leftover_temporary_file_of_a_killed_save_is_reused(tmp_path):
    path = tmp_path / "last.pt"
    temp_path_for(path).write_bytes(b"PK half of a killed save")
    for _ in range(3):
        save_checkpoint(payload(), path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert read_checkpoint(path)["method"] == "simclr"


def test_settings_differences():
    stored = {"lr": 0.1, "seed": 0, "epochs": 10}
    current = {"lr": 0.5, "seed": 0, "epochs": 12, "amp": "off"}
    assert settings_differences(stored, current) == [
        "lr 0.1 -> 0.5",
        "epochs 10 -> 12",
        "amp None -> 'off'",
    ]
    assert settings_differences(stored, dict(stored)) == []


def test_training_changes_are_refused_listed_or_returned_when_allowed():
    state = {"config": {"training": {"lr": 0.06, "seed": 0, "epochs": 10, "amp": "off"}}}
    current = {"lr": 0.5, "seed": 7, "epochs": 10, "amp": "off"}
    with pytest.raises(CheckpointError) as err:
        training_changes(state, current, "runs/x/last.pt")
    message = str(err.value)
    assert message.startswith("runs/x/last.pt was trained with other settings: ")
    assert "lr 0.06 -> 0.5; seed 0 -> 7." in message
    assert "allow_changed_settings=True" in message and "--allow-changed-settings" in message
    allowed = training_changes(state, current, allow_changed_settings=True)
    assert allowed == ["lr 0.06 -> 0.5", "seed 0 -> 7"]
    assert training_changes(state, dict(state["config"]["training"])) == []
    # A check made before every setting is known compares only those given.
    assert training_changes(state, {"seed": 0, "epochs": 10}, only_given=True) == []
    with pytest.raises(CheckpointError, match="epochs 10 -> 12"):
        training_changes(state, {"epochs": 12}, only_given=True)
