"""The layers of docs/developer.md: the core needs torch and numpy only and never imports the application."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "metricopt"
CORE_MODULES = ("metricopt", "metricopt.losses", "metricopt.metrics", "metricopt.blackbox", "metricopt.distributed",
                "metricopt.predict", "metricopt.evaluation", "metricopt.batches")
APPLICATION_DEPENDENCIES = ("sklearn", "scipy", "pandas", "matplotlib", "tqdm")
#: The one place the core names the application: the deprecated alias metricopt.MetricClassifier, imported on use.
DEPRECATED_ALIASES = {("__init__.py", "metricopt.app.estimator")}


def _core_files() -> list[Path]:
    return [path for path in PACKAGE.rglob("*.py")
            if "app" not in path.relative_to(PACKAGE).parts and path.name != "__main__.py"]


def _imported_modules(tree: ast.AST, *, top_level: bool = False) -> list[str]:
    """Modules imported anywhere in ``tree`` (or, with ``top_level``, outside functions: at import time)."""
    names = []
    nodes = ast.walk(tree)
    if top_level:
        nodes = (node for statement in tree.body if not isinstance(statement, (ast.FunctionDef, ast.ClassDef))
                 for node in ast.walk(statement))
    for node in nodes:
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_core_files_found() -> None:
    names = {path.relative_to(PACKAGE).as_posix() for path in _core_files()}
    assert {"losses/confusion.py", "metrics/ranking.py", "blackbox/value.py", "distributed.py"} <= names
    assert not any(name.startswith("app/") for name in names)


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_core_imports_neither_the_application_nor_its_dependencies(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for module in _imported_modules(tree, top_level=True):  # an optional dependency is imported where used
        assert module.split(".")[0] not in APPLICATION_DEPENDENCIES, f"{path.name} imports {module} at import time"
    for module in _imported_modules(tree):
        if module == "metricopt.app" or module.startswith("metricopt.app."):
            assert (path.relative_to(PACKAGE).as_posix(), module) in DEPRECATED_ALIASES, f"{path} imports {module}"


def test_importing_the_core_loads_no_application_dependency() -> None:
    """In a fresh interpreter: the modules importing the core adds beyond those torch itself loads."""
    code = (
        "import importlib, json, sys\n"
        "import torch\n"
        "before = set(sys.modules)\n"
        f"for name in {CORE_MODULES!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    added = json.loads(done.stdout.strip().splitlines()[-1])
    loaded = sorted({name.split(".")[0] for name in added} & set(APPLICATION_DEPENDENCIES))
    assert not loaded, f"importing the core loaded {loaded}"
    assert "metricopt.app" not in added


def test_deprecated_estimator_alias() -> None:
    import metricopt
    from metricopt.app import MetricClassifier

    with pytest.warns(DeprecationWarning, match="metricopt.app.MetricClassifier"):
        assert metricopt.MetricClassifier is MetricClassifier
    with pytest.raises(AttributeError, match="no_such_name"):
        metricopt.no_such_name  # noqa: B018


def test_the_command_line_loads_torch_but_not_scikit_learn_or_plotting() -> None:
    """``metricopt --help`` and the parser pay for torch, not for scikit-learn, pandas or matplotlib."""
    code = "import json, sys\nimport metricopt.app.cli\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    loaded = {name.split(".")[0] for name in json.loads(done.stdout.strip().splitlines()[-1])}
    assert not loaded & {"sklearn", "scipy", "pandas", "matplotlib"}, sorted(loaded & {"sklearn", "pandas"})


def test_submodules_are_attributes_of_the_package_in_a_fresh_interpreter() -> None:
    """``import metricopt`` is lazy, yet ``metricopt.losses.X`` works as it did when the package imported eagerly."""
    code = ("import metricopt, sys; assert 'torch' not in sys.modules; "
            "print(metricopt.losses.ConfusionLoss.__name__, metricopt.metrics.metric_score.__name__, "
            "metricopt.evaluation.report.__name__, 'losses' in dir(metricopt))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.split() == ["ConfusionLoss", "metric_score", "report", "True"]
