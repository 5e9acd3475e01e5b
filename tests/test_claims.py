"""What the docs claim about the package itself, checked, so a claim cannot go stale: what ``import mobilenet_pl``
loads (docs/api.md, docs/index.md), the console scripts (docs/training.md vs pyproject.toml), and the numbers
that are cheap to recompute (README.md, docs/cost.md: parameter and mult-add counts)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT_TEXT = (REPO / "pyproject.toml").read_text()  # read as text: tomllib is Python 3.11+
SCRIPTS = set(re.findall(r"^(mobilenet-pl-\w+) = ", PYPROJECT_TEXT, re.M))
DEPENDENCY_SPECS = re.findall(r'^  "([^"]+)",$', PYPROJECT_TEXT.split("dependencies = [", 1)[1].split("]", 1)[0], re.M)
# import name of each runtime dependency of pyproject.toml
IMPORT_NAME = {"hydra-core": "hydra", "scikit-learn": "sklearn", "typing-extensions": "typing_extensions"}
DEPENDENCIES = {
    IMPORT_NAME.get(name, name.replace("-", "_"))
    for name in (re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0] for spec in DEPENDENCY_SPECS)
}
LOADED_PROBE = """
import json, sys
def loaded():
    return sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[1])))
import mobilenet_pl
steps = [loaded()]
mobilenet_pl.create_model
steps.append(loaded())
mobilenet_pl.MobileNetClassifier
steps.append(loaded())
print(json.dumps(steps))
"""


def _listed(text: str, lead: str) -> list[str]:
    found = re.search(re.escape(lead) + r" ((?:`\w+`(?:, )?)+)", " ".join(text.split()))
    assert found, f"the docs no longer say {lead!r}"
    return sorted(re.findall(r"`(\w+)`", found.group(1)))


def test_docs_name_exactly_the_dependencies_each_import_loads() -> None:
    out = subprocess.run(
        [sys.executable, "-c", LOADED_PROBE, json.dumps(sorted(DEPENDENCIES))],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    package, models, lit = json.loads(out.stdout.strip().splitlines()[-1])
    api = (REPO / "docs" / "api.md").read_text()
    assert package == [] and "- `import mobilenet_pl`: none of them." in api
    assert _listed(api, "loads these of its dependencies:") == models
    assert _listed((REPO / "docs" / "index.md").read_text(), "loads these of its dependencies:") == models
    assert _listed(api, "adds these of its dependencies:") == sorted(set(lit) - set(models))
    assert "lightning" not in models and "hydra" not in models
    assert {"torch", "lightning", "timm"} <= DEPENDENCIES  # the pyproject parse found the list


def test_docs_list_every_console_script_and_no_other() -> None:
    scripts = SCRIPTS
    assert len(scripts) == 7
    training = (REPO / "docs" / "training.md").read_text()
    listed = re.search(r"Every command has a console script of the same\nname: (.*?)\.", training, re.S)
    assert listed and set(re.findall(r"`(mobilenet-pl-\w+)`", listed.group(1))) == scripts
    assert {f"mobilenet-pl-{tool}" for tool in ("train", "eval", "profile", "export", "quantize")} <= scripts
    docs = [REPO / "README.md", *(REPO / "docs").glob("*.md")]
    assert not [doc.name for doc in docs if "no console script" in doc.read_text()]
    mentioned = {m for doc in docs for m in re.findall(r"mobilenet-pl-[a-z]+", doc.read_text())}
    assert mentioned <= scripts  # no doc names a script that does not exist


def _md_rows(text: str, header: str) -> list[list[str]]:
    """The cells of the markdown table that starts with ``header``."""
    lines = text.split(header, 1)[1].splitlines()[2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("|")][
        : next((i for i, line in enumerate(lines) if not line.startswith("|")), len(lines))
    ]


def test_cost_docs_table_is_what_profile_paper_true_prints() -> None:
    """docs/cost.md's table and the README's two headline counts: ``python -m mobilenet_pl.profile paper=true``."""
    from mobilenet_pl.profile import paper_table

    printed = [line.split() for line in paper_table().splitlines()[1:]]
    cost = (REPO / "docs" / "cost.md").read_text()
    documented = _md_rows(cost, "| Model | width | res | M mult-adds | paper | M params | paper | params |")

    def width_as_number(rows: list[list[str]]) -> list[list[str]]:
        return [[row[0], f"{float(row[1]):g}", *row[2:]] for row in rows]

    assert width_as_number(documented) == width_as_number(printed)
    v1, v2 = printed[0], printed[19]
    assert v1[:3] == ["mobilenet_v1", "1", "224"] and v2[:3] == ["mobilenet_v2", "1", "224"]
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f"V1 1.0@224: {v1[3]} M mult-adds, {v1[7]} params; V2 1.0@224: {v2[3]} M, {v2[7]}" in readme


def test_cost_docs_profile_example_is_what_profile_prints(capsys) -> None:  # type: ignore[no-untyped-def]
    from mobilenet_pl.profile import main

    cost = (REPO / "docs" / "cost.md").read_text()
    command = "$ python -m mobilenet_pl.profile model=v1 width=0.5 resolution=160\n"
    documented = cost.split(command, 1)[1].split("```", 1)[0]
    assert main(["model=v1", "width=0.5", "resolution=160"]) == 0
    printed = capsys.readouterr().out
    assert [line.rstrip() for line in printed.splitlines()] == documented.splitlines()  # docs drop trailing blanks
