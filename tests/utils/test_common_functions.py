"""common_functions: PML's public helpers, compared with PML's c_f on the same inputs."""

import os

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils import common_functions as pml_cf

from metricssl.distances.cosine_similarity import CosineSimilarity
from metricssl.distances.lp_distance import LpDistance
from metricssl.losses.contrastive_loss import ContrastiveLoss
from metricssl.utils import common_functions as c_f


def test_every_pml_public_function_exists():
    names = [n for n in dir(pml_cf) if not n.startswith("_")]
    modules = {"collections", "glob", "logging", "os", "re", "urllib", "np", "scipy", "torch"}
    missing = [n for n in names if n not in modules and n != "tqdm" and not hasattr(c_f, n)]
    assert not missing, missing


def test_try_next_on_generator_restarts():
    data = [1, 2]
    gen = iter(data)
    seen = []
    for _ in range(5):
        gen, x = c_f.try_next_on_generator(gen, data)
        seen.append(x)
    assert seen == [1, 2, 1, 2, 1]


def test_safe_random_choice_matches_pml_with_the_same_seed():
    for size in (3, 12):  # without, then with replacement
        np.random.seed(0)
        ours = c_f.safe_random_choice(np.arange(8), size)
        np.random.seed(0)
        theirs = pml_cf.safe_random_choice(np.arange(8), size)
        assert (ours == theirs).all()
    assert len(set(c_f.safe_random_choice(np.arange(8), 8).tolist())) == 8


def test_unslice_by_n_and_small_tensor_helpers():
    parts = [torch.randn(3, 2) for _ in range(3)]
    assert torch.equal(c_f.unslice_by_n(parts), pml_cf.unslice_by_n(parts))
    assert c_f.unslice_by_n([p.double() for p in parts]).dtype == torch.float64
    x = torch.rand(4, 3, 2) > 0.3
    assert torch.equal(c_f.torch_all_from_dim_to_end(x, 1), pml_cf.torch_all_from_dim_to_end(x, 1))
    y = torch.randn(10, 3)
    torch.testing.assert_close(c_f.torch_standard_scaler(y), pml_cf.torch_standard_scaler(y))
    assert c_f.exclude([1, 2, 3], [2]) == [1, 3]
    assert c_f.append_map(["a", "b"], "_x") == ["a_x", "b_x"]
    assert c_f.return_input(y) is y
    assert c_f.use_cuda_if_available() == pml_cf.use_cuda_if_available()


def test_set_requires_grad_and_layers_to_eval():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    c_f.set_requires_grad(model, False)
    assert not any(p.requires_grad for p in model.parameters())
    model.apply(c_f.set_layers_to_eval("BatchNorm"))
    assert model[0].training and not model[1].training


def test_label_helpers_match_pml():
    labels = np.array([[5, 1], [7, 1], [5, 0], [9, 2]])
    assert c_f.get_label_map(labels) == pml_cf.get_label_map(labels)
    assert c_f.get_label_map(labels[:, 0]) == pml_cf.get_label_map(labels[:, 0])
    assert c_f.make_label_to_rank_dict([30, 10, 20]) == pml_cf.make_label_to_rank_dict([30, 10, 20])
    with pytest.raises(ValueError, match="duplicates"):
        c_f.make_label_to_rank_dict([1, 1])
    ours, theirs = (m.get_labels_to_indices(torch.tensor([2, 0, 2, 1])) for m in (c_f, pml_cf))
    assert ours.keys() == theirs.keys()
    assert all((ours[k] == theirs[k]).all() for k in ours)
    mapper, pml_mapper = (
        m.LabelMapper(set_min_label_to_zero=True, dataset_labels=labels) for m in (c_f, pml_cf)
    )
    for level in (0, 1):
        column = labels[:, level]
        assert (mapper.map(column, level) == pml_mapper.map(column, level)).all()
        assert (
            c_f.map_labels(mapper.map, labels) == pml_cf.map_labels(pml_mapper.map, labels)
        ).all()
        assert torch.equal(
            c_f.process_label(labels, level, mapper.map),
            pml_cf.process_label(labels, level, pml_mapper.map),
        )
    assert (c_f.get_hierarchy_label(labels, "all") == labels).all()
    with pytest.raises(ValueError, match="hierarchy_level"):
        c_f.get_hierarchy_label(labels[:, 0], 1)
    with pytest.raises(TypeError, match="set_min_label_to_zero"):
        c_f.LabelMapper(set_min_label_to_zero=1)
    assert c_f.LabelMapper().map(labels, 0) is labels


def test_argument_checks():
    x, labels = torch.randn(4, 2), torch.arange(4)
    c_f.check_shapes(x, labels)
    with pytest.raises(ValueError, match="Number of embeddings"):
        c_f.check_shapes(x, labels[:3])
    ref, ref_labels = c_f.set_ref_emb(x, labels, None, None)
    assert ref is x and ref_labels is labels
    with pytest.raises(ValueError):
        c_f.labels_not_supported(labels, None)
    with pytest.raises(ValueError):
        c_f.ref_not_supported(x, labels, x.clone(), labels)
    with pytest.raises(ValueError):
        c_f.indices_tuple_not_supported((labels,) * 3)
    with pytest.raises(ValueError):
        c_f.labels_required(None)
    with pytest.raises(ValueError):
        c_f.labels_or_indices_tuple_required(None, None)
    loss = ContrastiveLoss(distance=CosineSimilarity())
    c_f.assert_distance_type(loss, CosineSimilarity, is_inverted=True)
    c_f.assert_distance_type(loss, (LpDistance, CosineSimilarity))
    with pytest.raises(AssertionError, match="LpDistance"):
        c_f.assert_distance_type(loss, LpDistance)
    with pytest.raises(AssertionError, match="is_inverted"):
        c_f.assert_distance_type(loss, is_inverted=False)


def test_recordable_attributes():
    obj = type("Obj", (), {})()
    c_f.add_to_recordable_attributes(obj, name="margin")
    c_f.add_to_recordable_attributes(obj, list_of_names=["count", "avg"], is_stat=True)
    assert obj._record_these == ["margin"] and obj._record_these_stats == ["count", "avg"]
    obj.count = 5
    c_f.reset_stats(obj)
    assert obj.count == 0
    assert c_f.list_of_recordable_attributes_list_names() == [
        "_record_these",
        "_record_these_stats",
    ]


def test_saving_and_loading_models(tmp_path):
    models = {"trunk": torch.nn.Linear(3, 2), "embedder": torch.nn.Linear(2, 2)}
    c_f.save_dict_of_models(models, 4, str(tmp_path))
    assert os.path.exists(c_f.modelpath_creator(str(tmp_path), "trunk", 4))
    assert c_f.modelpath_creator("f", "trunk", None) == pml_cf.modelpath_creator("f", "trunk", None)
    fresh = {"trunk": torch.nn.Linear(3, 2), "embedder": torch.nn.Linear(2, 2)}
    c_f.load_dict_of_models(fresh, 4, str(tmp_path), "cpu")
    for name in models:
        for a, b in zip(models[name].parameters(), fresh[name].parameters()):
            assert torch.equal(a, b)
    # A DataParallel state dict (keys prefixed "module.") loads into the bare model.
    path = tmp_path / "dp.pth"
    torch.save(torch.nn.DataParallel(models["trunk"]).state_dict(), path)
    target = torch.nn.Linear(3, 2)
    c_f.load_model(target, path, "cpu")
    assert torch.equal(target.weight, models["trunk"].weight)
    (tmp_path / "trunk_best7.pth").touch()
    (tmp_path / "trunk_2.pth").touch()
    for best in (False, True):
        expected = pml_cf.latest_version(str(tmp_path), "trunk_*.pth", best=best)
        assert c_f.latest_version(str(tmp_path), "trunk_*.pth", best=best) == expected
    assert c_f.latest_version(str(tmp_path), "trunk_*.pth", best=True) == (7, "best7")
    assert c_f.latest_version(str(tmp_path), "none_*.pth") == (0, None)
    c_f.delete_dict_of_models(models, 4, str(tmp_path))
    assert not os.path.exists(c_f.modelpath_creator(str(tmp_path), "trunk", 4))
    with pytest.raises(OSError):
        c_f.load_dict_of_models(fresh, 9, str(tmp_path), "cpu", assert_success=True)


def test_dataloaders_and_datasets():
    data = c_f.EmbeddingDataset(torch.randn(10, 3), torch.arange(10))
    assert len(data) == 10 and data[3][1] == 3
    with pytest.raises(ValueError, match="labels"):
        c_f.EmbeddingDataset(torch.randn(10, 3), torch.arange(9))
    train = c_f.get_train_dataloader(data, 4, None, 0, None)
    assert [len(b[0]) for b in train] == [4, 4]  # drop_last
    evaluation = c_f.get_eval_dataloader(data, 4, 0, None)
    assert [len(b[0]) for b in evaluation] == [4, 4, 2]
    batches = torch.utils.data.BatchSampler(range(10), 5, drop_last=False)
    assert len(list(c_f.get_train_dataloader(data, 4, batches, 0, None))) == 2


def test_regex_and_sqlite_helpers():
    import sqlite3

    assert c_f.regex_replace("a+", "b", "caat") == "cbt"
    assert [r.pattern for r in c_f.regex_wrapper(["x", "y"])] == ["x", "y"]
    con = sqlite3.connect(":memory:")
    con.row_factory = sqlite3.Row
    con.execute("create table t (a, b)")
    con.executemany("insert into t values (?, ?)", [(1, 2), (3, 4)])
    rows = con.execute("select * from t").fetchall()
    assert c_f.sqlite_obj_to_dict(rows) == {"a": [1, 3], "b": [2, 4]}


# -- PML's globals: set on PML's path, they reach the package's code (core.common owns them)


def test_numpy_random_set_on_the_pml_path_drives_the_samplers(monkeypatch):
    from pytorch_metric_learning.samplers import MPerClassSampler as PMLSampler

    from metricssl.samplers import MPerClassSampler

    labels = np.repeat(np.arange(6), 5)
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(7))
    monkeypatch.setattr(pml_cf, "NUMPY_RANDOM", np.random.RandomState(7))
    ours = list(MPerClassSampler(labels, m=2, length_before_new_iter=24))
    theirs = list(PMLSampler(labels, m=2, length_before_new_iter=24))
    assert ours == theirs
    monkeypatch.setattr(c_f, "NUMPY_RANDOM", np.random.RandomState(8))
    assert list(MPerClassSampler(labels, m=2, length_before_new_iter=24)) != theirs


def test_collect_stats_set_on_the_pml_path_reaches_losses_and_miners():
    from metricssl.miners import TripletMarginMiner

    old = c_f.COLLECT_STATS
    try:
        c_f.COLLECT_STATS = True
        miner, loss = TripletMarginMiner(), ContrastiveLoss()
    finally:
        c_f.COLLECT_STATS = old
    assert miner.collect_stats and loss.collect_stats
    miner(torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    assert "pos_pair_dist" in miner._record_these_stats
    assert not TripletMarginMiner().collect_stats


def test_logger_set_on_the_pml_path_is_the_one_the_package_logs_on(monkeypatch, caplog):
    import logging

    from metricssl.eval import AccuracyCalculator

    mine = logging.getLogger("my_app.metrics")
    monkeypatch.setattr(c_f, "LOGGER", mine)
    x = torch.randn(10, 3)
    with caplog.at_level(logging.WARNING, logger="my_app.metrics"):
        with pytest.warns(UserWarning, match="None of the query labels"):
            AccuracyCalculator(include=("precision_at_1",)).get_accuracy(
                x[:5], torch.zeros(5), x[5:], torch.ones(5)
            )
    assert [r.name for r in caplog.records] == ["my_app.metrics"]


def test_set_logger_name_and_reads_on_the_pml_path_follow_the_owner(monkeypatch):
    from metricssl.core import common

    monkeypatch.setattr(common, "LOGGER", common.LOGGER)
    monkeypatch.setattr(common, "LOGGER_NAME", common.LOGGER_NAME)
    c_f.set_logger_name("renamed")
    assert c_f.LOGGER_NAME == common.LOGGER_NAME == "renamed"
    assert c_f.LOGGER is common.LOGGER and common.LOGGER.name == "renamed"
    with pytest.raises(AttributeError):
        del c_f.NUMPY_RANDOM
