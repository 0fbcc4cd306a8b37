"""torch.cuda as a machine with GPUs answers it, on a machine without one.

For code that only asks (``is_available``, ``device_count``, ``current_device``) and sets
(``set_device``, ``set_rng_state``, ``manual_seed``): device selection and random-state
restoring. No kernel runs; what was set is recorded. ``set_rng_state`` is replaced in
``torch.cuda.random`` too, where ``torch.cuda.set_rng_state_all`` finds it.
"""

import torch


class FakeCuda:
    """``count`` visible GPUs; ``current`` is the current one (0 until ``set_device``)."""

    def __init__(self, monkeypatch, count: int):
        self.count = count
        self.current = 0
        self.selected: list[int] = []  # set_device calls
        self.rng_states: dict[int, torch.Tensor] = {}  # device index -> last state set
        self.seeds: dict[int, int] = {}  # device index -> manual_seed
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "set_device", self.set_device)
        monkeypatch.setattr(torch.cuda, "manual_seed", self.manual_seed)
        for module in (torch.cuda, torch.cuda.random):
            monkeypatch.setattr(module, "set_rng_state", self.set_rng_state)

    def _index(self, device) -> int:
        if isinstance(device, int):
            index = device
        else:
            device = torch.device(device)
            index = self.current if device.index is None else device.index
        if not 0 <= index < self.count:
            # What torch raises for a GPU that is not there (default_generators[index]).
            raise IndexError(f"cuda:{index} does not exist: {self.count} GPU(s) visible")
        return index

    def set_device(self, device) -> None:
        self.current = self._index(device)
        self.selected.append(self.current)

    def set_rng_state(self, state: torch.Tensor, device="cuda") -> None:
        self.rng_states[self._index(device)] = state.clone()

    def manual_seed(self, seed: int) -> None:
        self.seeds[self.current] = seed


def philox_state(seed: int, offset: int = 0) -> torch.Tensor:
    """A CUDA generator's state as ``get_state()`` returns it: 16 bytes, seed and offset."""
    return torch.tensor([seed, offset], dtype=torch.int64).view(torch.uint8).clone()
