"""The import graph of the package, read from the source (every import, lazy ones inside functions included),
and the rules it must follow: the layers are folders and imports only point down (docs/architecture.md).

``python tests/import_graph.py`` prints the graph and every broken rule.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mobilenet_pl"
FACE = "mobilenet_pl"
COMMANDS = {
    f"mobilenet_pl.{tool}" for tool in ("train", "eval", "profile", "export", "quantize", "benchmark", "report")
}
ENTRY_POINTS = COMMANDS  # the name older tests use

# bottom to top: a module may import its own floor and the floors below it, never one above
FLOORS = ("models", "lit", "app", "deploy", "bench", "commands")
# modules outside the floor folders, and the floor they stand on
FLOOR_OF_MODULE = {"mobilenet_pl._version": "models", "mobilenet_pl._checks": "models"}
# third-party packages a floor must not import, even lazily, and why
FORBIDDEN_PACKAGES = {
    "models": {"lightning", "pytorch_lightning", "hydra", "omegaconf", "wandb", "yaml"},  # plain PyTorch
    "lit": {"hydra", "omegaconf", "yaml"},  # the library reads no YAML: a default is written in Python
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # a module of the package, or a third-party top-level package
    line: int

    path: str  # the importing file, relative to the package's parent

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.target}"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package): p for p in package.rglob("*.py")}


def imports(package: Path = PACKAGE) -> list[Import]:
    """Every import statement of every module: package targets resolved to the module they name
    (``from mobilenet_pl.x import y`` is x, or x.y where that is a module), third-party ones to their
    top-level package."""
    modules = _modules(package)
    found: list[Import] = []
    for name, path in modules.items():
        where = path.relative_to(package.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] != FACE:
                    found.append(Import(name, target.split(".")[0], node.lineno, where))
                    continue
                while target not in modules:
                    target = target.rpartition(".")[0]
                if target != name:
                    found.append(Import(name, target, node.lineno, where))
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports."""
    graph: dict[str, set[str]] = {name: set() for name in _modules()}
    for imp in imports():
        if imp.target.startswith(FACE):
            graph[imp.module].add(imp.target)
    return graph


def floor(module: str) -> str | None:
    """The floor a module stands on; None for the package face."""
    if module == FACE:
        return None
    if module in COMMANDS:
        return "commands"
    if module in FLOOR_OF_MODULE:
        return FLOOR_OF_MODULE[module]
    first = module.split(".")[1]
    if first not in FLOORS:
        raise ValueError(f"{module} is in no floor: put it in one of the folders {FLOORS[:-1]}")
    return first


def broken_rules(package: Path = PACKAGE) -> list[str]:
    """One line per import that breaks a rule, naming the file, the line and the rule."""
    broken: list[str] = []
    for imp in imports(package):
        here = floor(imp.module)
        if not imp.target.startswith(FACE):
            if here in FORBIDDEN_PACKAGES and imp.target in FORBIDDEN_PACKAGES[here]:
                broken.append(f"{imp}: {here}/ must not import {imp.target}")
            continue
        if here is None:
            continue  # the face may name anything it re-exports
        if imp.target == FACE:
            broken.append(f"{imp}: only the package face is `mobilenet_pl`; import the module that defines the name")
        elif imp.target in COMMANDS:
            broken.append(f"{imp}: nothing imports a command module; move what it needs into a floor")
        elif FLOORS.index(floor(imp.target)) > FLOORS.index(here):  # type: ignore[arg-type]
            broken.append(f"{imp}: {here}/ is below {floor(imp.target)}/; imports only point down")
    return list(dict.fromkeys(broken))  # `from x import a, b` is one import


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by depth-first search (each reported once per start node on it)."""
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:  # report each cycle from its smallest node only
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    return found


if __name__ == "__main__":
    graph = import_graph()
    for module in sorted(graph):
        print(f"{module} [{floor(module) or 'face'}] -> {', '.join(sorted(graph[module])) or '-'}")
    print("cycles:", cycles(graph) or "none")
    print("broken rules:", *(broken_rules() or ["none"]), sep="\n  ")
