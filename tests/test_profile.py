import json
from pathlib import Path

import pytest

from mobilenet_pl.profile import main


def test_profile_prints_table2_breakdown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model=v1", "width=0.5", "resolution=160"]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v1 width 0.5" in out
    for row in ["conv 1x1", "depthwise 3x3", "full conv 3x3", "fc", "formula 1/N + 1/Dk^2"]:
        assert row in out
    assert "1,331,592" in out


def test_profile_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model=v2", "json=true"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == 3_504_872 and data["model"] == "mobilenet_v2"


def test_profile_writes_nothing_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["model=v1", "width=0.25", "resolution=64"]) == 0
    assert list(tmp_path.iterdir()) == []  # no outputs/, .hydra/ or log file


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("width=-1", "width=-1.0 is not allowed: width must be a number > 0"),
        ("width=abc", "width=abc: Value 'abc' of type 'str' could not be converted to Float"),
        ("resolution=16", "resolution=16 is not allowed: resolution must be a whole number >= 32"),
        ("model=v3", "unknown option 'model=v3'; choose from: model=v1, model=v2"),
        ("depth=2", "unknown key 'depth'; choose from: "),
        ("widht=2", "unknown key 'widht'; did you mean 'width'?"),
    ],
)
def test_profile_bad_input_is_one_line(arg: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([arg]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: ")
