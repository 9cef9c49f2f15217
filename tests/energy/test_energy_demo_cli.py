"""``facerig demo``: argument validation (the full run is exercised by the README Quickstart)."""

from facerig.cli import main


def test_demo_rejects_bad_arguments(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "out"), "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main(["demo", "-o", str(tmp_path / "out"), "--weight", "-1"]) == 2
    assert "--weight" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "-o", str(blocker / "sub")]) == 2
    assert "--out" in capsys.readouterr().err
