"""The layers hold: every module stands in a floor, imports only point down (lazy imports too), nothing
imports a command, and no module outgrows the rest (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from import_graph import COMMANDS, FLOORS, PACKAGE, broken_rules, cycles, floor, import_graph

REPO = PACKAGE.parent


def test_imports_only_point_down() -> None:
    broken = broken_rules()
    assert not broken, "imports that break the layers:\n" + "\n".join(broken)


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_every_module_stands_in_a_floor_and_every_command_is_a_thin_top_level_module() -> None:
    graph = import_graph()
    assert set(graph) >= COMMANDS
    for module in graph:
        if module != "mobilenet_pl":
            assert floor(module) in FLOORS  # raises, naming the module, when it is in no floor
    top_level = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "_version", "_checks"}
    assert {f"mobilenet_pl.{name}" for name in top_level} == COMMANDS, "only commands live at the top level"


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "mobilenet_pl" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "mobilenet_pl"


def test_the_rules_name_each_offending_import_even_a_lazy_one(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "__init__.py": "from mobilenet_pl.models.net import Net\n",
            "models/__init__.py": "",
            "models/net.py": "def f():\n    import lightning\n    from mobilenet_pl.lit.module import M\n",
            "lit/__init__.py": "",
            "lit/module.py": "import torch\n\n\ndef g():\n    from omegaconf import OmegaConf\n",
            "app/__init__.py": "",
            "app/runner.py": "from mobilenet_pl import Net\nfrom mobilenet_pl.train import main\n",
            "train.py": "from mobilenet_pl.app.runner import run\n",
        },
    )
    assert broken_rules(package) == [
        "mobilenet_pl/app/runner.py:1 imports mobilenet_pl: only the package face is `mobilenet_pl`; "
        "import the module that defines the name",
        "mobilenet_pl/app/runner.py:2 imports mobilenet_pl.train: nothing imports a command module; "
        "move what it needs into a floor",
        "mobilenet_pl/lit/module.py:5 imports omegaconf: lit/ must not import omegaconf",
        "mobilenet_pl/models/net.py:2 imports lightning: models/ must not import lightning",
        "mobilenet_pl/models/net.py:3 imports mobilenet_pl.lit.module: models/ is below lit/; imports only point down",
    ]


def _code_strings_and_names(tree: ast.AST) -> list[tuple[int, str]]:
    """Names and string constants of the code, docstrings left out (they may cite conf/)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            found.append((node.lineno, node.attr))
    return found


def test_lit_reads_no_config_file() -> None:
    """The library's defaults are written in Python; conf/ is the app's recipe (YAML readers are caught by
    the import rules, paths into conf/ here)."""
    for path in (PACKAGE / "lit").rglob("*.py"):
        for line, text in _code_strings_and_names(ast.parse(path.read_text())):
            assert not re.search(r"^config_dir$|(^|/)conf(/|$)|\.ya?ml$", text), (
                f"{path.relative_to(REPO)}:{line} reads the app's configs ({text!r})"
            )


@pytest.mark.parametrize("folder", [p for p in PACKAGE.iterdir() if p.is_dir() and p.name in FLOORS])
def test_no_module_holds_more_than_a_tenth_of_the_package(folder: Path) -> None:
    sizes = {p: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    limit = sum(sizes.values()) // 10
    for path in folder.rglob("*.py"):
        assert sizes[path] <= limit, f"{path.relative_to(REPO)} has {sizes[path]} lines (limit {limit})"


def test_the_architecture_page_names_every_folder() -> None:
    page = (REPO / "docs" / "architecture.md").read_text()
    for folder in sorted(p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert f"`{folder.name}/`" in page, f"docs/architecture.md does not describe mobilenet_pl/{folder.name}/"


def test_names_are_the_products_not_the_history() -> None:
    """No file name, test or doc names one of our issue numbers; upstream threads are cited as
    ``project #number``."""
    history = re.compile(r"\bissue[ _-]?\d+", re.IGNORECASE)
    for folder in ("mobilenet_pl", "tests", "docs", "benchmarks", "conf"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".md", ".sh", ".yaml", ".txt", ""}:
                where = path.relative_to(REPO)
                assert not history.search(where.as_posix()), f"{where}: a file named after an issue"
                found = history.search(path.read_text(errors="replace"))
                assert found is None, f"{where}: names {found.group(0)!r}; name the feature instead"
