import logging

import pytest

from metricssl.utils import common_functions as c_f
from metricssl.utils.key_checker import KeyChecker, KeyCheckerDict, default_important


class Holder:
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


def _schema():
    return KeyCheckerDict(
        {
            "models": KeyChecker(["trunk", "embedder", "classifier_[0-9]+"], essential=["trunk"]),
            "optimizers": KeyChecker(
                lambda s, d: [k + "_optimizer" for k in d["models"].keys], important=[]
            ),
        }
    )


def test_allowed_keys_are_patterns_and_essential_keys_are_required(caplog):
    schema = _schema()
    with caplog.at_level(logging.WARNING, logger=c_f.LOGGER_NAME):
        schema.verify(Holder(models={"trunk": 1, "classifier_3": 2}, optimizers={}))
    # embedder is important by default (allowed, not essential); an empty dict warns.
    assert 'models is missing "embedder"' in caplog.text
    assert "optimizers is empty" in caplog.text
    with pytest.raises(ValueError, match="models keys must be one of"):
        schema.verify(Holder(models={"trunk": 1, "head": 2}))
    with pytest.raises(AssertionError, match='models must contain "trunk"'):
        schema.verify(Holder(models={"embedder": 1}))
    # Callable keys see the other checkers: "trunk_optimizer" allowed, "frog_optimizer" not.
    schema.verify(Holder(models={"trunk": 1}, optimizers={"trunk_optimizer": 0}))
    with pytest.raises(AssertionError, match="optimizers keys"):
        schema.verify(Holder(models={"trunk": 1}, optimizers={"frog_optimizer": 0}))


def test_matches_pml_on_the_same_schema(caplog):
    from pytorch_metric_learning.utils import key_checker as pml_kc

    cases = [
        {"models": {"trunk": 1}},
        {"models": {"trunk": 1, "embedder": 2}, "optimizers": {"embedder_optimizer": 0}},
        {"models": {"oops": 1}},
        {"models": {"embedder": 1}},
        {"models": None},
    ]
    for attrs in cases:
        outcomes = []
        for mod, logger in (
            (__import__("metricssl.utils.key_checker", fromlist=["x"]), c_f.LOGGER_NAME),
            (pml_kc, "PML"),
        ):
            schema = mod.KeyCheckerDict(
                {
                    "models": mod.KeyChecker(["trunk", "embedder"], essential=["trunk"]),
                    "optimizers": mod.KeyChecker(
                        lambda s, d: [k + "_optimizer" for k in d["models"].keys],
                        important=["trunk_optimizer"],
                    ),
                }
            )
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger=logger):
                try:
                    schema.verify(Holder(**attrs))
                    raised = None
                except AssertionError:
                    raised = AssertionError
            outcomes.append((raised, [r.getMessage() for r in caplog.records]))
        assert outcomes[0] == outcomes[1], attrs


def test_default_important():
    checker = KeyChecker(["a", "b", "c"], essential=["b"])
    assert default_important(checker, {}) == ["a", "c"]
    # Callable keys are resolved (PML's default_important fails on them).
    checker = KeyChecker(lambda s, d: ["x_opt", "y_opt"], essential=lambda s, d: ["x_opt"])
    assert default_important(checker, {}) == ["y_opt"]
