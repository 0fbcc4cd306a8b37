"""Every public name of PML 2.9's user-facing modules exists at the same path in metricssl.

PML's names are read from its source (not by importing it): in a package ``__init__`` the
names it imports from its own submodules (its exports), in a module the classes, functions
and constants it defines. Modules it merely imports (torch, numpy, faiss, logging, ...) are
not names of PML. Names starting with an underscore are private and skipped.
"""

import ast
import importlib
from pathlib import Path

import pytorch_metric_learning

PML_ROOT = Path(pytorch_metric_learning.__file__).parent

MODULES = (
    "losses",
    "miners",
    "distances",
    "reducers",
    "regularizers",
    "samplers",
    "utils.distributed",
    "utils.loss_and_miner_utils",
    "utils.accuracy_calculator",
    "utils.inference",
    "utils.common_functions",
    "utils.key_checker",
    "utils.loss_tracker",
    "utils.module_with_records",
    "utils.module_with_records_and_reducer",
    "utils.logging_presets",
    "testers",
    "trainers",
    "datasets",
)


def _source_file(module: str) -> Path:
    path = PML_ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _top_level(statements):
    """Top-level statements, including those inside module-level if/try blocks."""
    for node in statements:
        if isinstance(node, (ast.If, ast.Try)):
            yield from _top_level(node.body)
            yield from _top_level(node.orelse)
            if isinstance(node, ast.Try):
                yield from _top_level(node.finalbody)
                for handler in node.handlers:
                    yield from _top_level(handler.body)
        else:
            yield node


def _assigned_names(target):
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _assigned_names(element)


def pml_public_names(module: str) -> list[str]:
    source = _source_file(module)
    is_package = source.name == "__init__.py"
    names = set()
    for node in _top_level(ast.parse(source.read_text()).body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(_assigned_names(target))
        elif isinstance(node, ast.AnnAssign):
            names.update(_assigned_names(node.target))
        elif isinstance(node, ast.ImportFrom) and node.level > 0 and is_package:
            # A package re-exports what it imports from its own submodules; a submodule
            # imported as a name (``from . import x``) is a module, not an export.
            for alias in node.names:
                if node.module is None and (
                    source.parent.joinpath(alias.name).is_dir()
                    or source.parent.joinpath(alias.name + ".py").exists()
                ):
                    continue
                names.add(alias.asname or alias.name)
    return sorted(n for n in names if not n.startswith("_"))


def missing_names() -> dict[str, list[str]]:
    """``{module: [PML names metricssl's module lacks]}`` for the modules that lack some."""
    missing = {}
    for module in MODULES:
        wanted = pml_public_names(module)
        try:
            ours = importlib.import_module(f"metricssl.{module}")
        except ImportError as err:
            missing[f"{module} (import failed: {err})"] = wanted
            continue
        absent = [name for name in wanted if not hasattr(ours, name)]
        if absent:
            missing[module] = absent
    return missing


def test_pml_names_are_read_from_source():
    # The lists are not empty and hold known names: the coverage check below is not vacuous.
    assert "TripletMarginLoss" in pml_public_names("losses")
    assert "MPerClassSampler" in pml_public_names("samplers")
    assert "AccuracyCalculator" in pml_public_names("utils.accuracy_calculator")
    assert "LOGGER" in pml_public_names("utils.common_functions")
    assert "DistributedLossWrapper" in pml_public_names("utils.distributed")
    for module in MODULES:
        names = pml_public_names(module)
        assert names, module
        assert not {"torch", "np", "faiss", "logging", "c_f", "lmu"} & set(names), module


def test_every_pml_public_name_exists_in_metricssl():
    missing = missing_names()
    report = "\n".join(
        f"  metricssl.{module}: {len(names)} missing: {', '.join(names)}"
        for module, names in missing.items()
    )
    assert not missing, f"PML public names missing from metricssl:\n{report}"
