import pytest

from facerig.assets import asset_dirs, asset_path


def test_asset_path_finds_shipped_model_and_env_override(tmp_path, monkeypatch):
    p = asset_path("default_model.npz")
    assert p.is_file() and p.parent.name == "assets"
    (tmp_path / "default_model.npz").write_bytes(b"x")
    monkeypatch.setenv("FACERIG_ASSETS", str(tmp_path))
    assert asset_dirs()[0] == tmp_path
    assert asset_path("default_model.npz") == tmp_path / "default_model.npz"


def test_missing_asset_names_searched_folders_and_hint():
    with pytest.raises(FileNotFoundError, match=r"searched .*assets.*rebuild with tools/x.py"):
        asset_path("no_such_asset.bin", missing_hint="rebuild with tools/x.py")
