"""embed_dataset: where the features are gathered."""

import torch

from metricssl.data.digits import load_digits
from metricssl.ssl.embed import embed_dataset
from metricssl.ssl.registry import build_method


def test_features_are_gathered_on_the_requested_device():
    images, _ = load_digits("test")
    method = build_method("simclr", images.shape[1:])
    on_cpu = embed_dataset(method, images[:20], batch_size=8)
    assert on_cpu.device.type == "cpu" and on_cpu.dtype == torch.float32
    # None: where they are computed (a GPU's features stay on it for the evaluation).
    assert embed_dataset(method, images[:20], batch_size=8, out_device=None).device.type == "cpu"
    # Any other device receives every batch (the meta device stands in for a second one).
    elsewhere = embed_dataset(method, images[:20], batch_size=8, out_device="meta")
    assert elsewhere.device.type == "meta" and elsewhere.shape == on_cpu.shape


def test_trainer_keeps_evaluation_features_on_its_device(monkeypatch):
    from metricssl.ssl import trainer as trainer_module

    seen = {}

    def spy(method, data, batch_size, device, out_device="cpu"):
        seen["out_device"] = out_device
        return torch.zeros(len(data), 4)

    monkeypatch.setattr(trainer_module, "embed_dataset", spy)
    images, labels = load_digits("test")
    trainer = trainer_module.Trainer(
        method="simclr", dataset=(images[:32], labels[:32]), epochs=1, batch_size=16
    )
    trainer._features(trainer.train_data)
    assert seen["out_device"] is None
