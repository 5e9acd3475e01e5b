import json

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


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("width=-1", "width must be a float > 0, got '-1'"),
        ("width=abc", "width must be a float > 0, got 'abc'"),
        ("resolution=16", "resolution must be a int >= 32, got '16'"),
        ("model=v3", "model='v3' is unknown"),
        ("depth=2", "unknown argument 'depth=2'"),
    ],
)
def test_profile_bad_input_is_one_line(arg: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([arg]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
