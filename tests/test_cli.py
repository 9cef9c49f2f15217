import subprocess
import sys

from facerig.cli import build_parser, main


def test_help_lists_subcommands(capsys):
    parser = build_parser()
    text = parser.format_help()
    assert "facerig" in text
    assert main([]) == 0  # no command: prints help, exits 0
    assert "usage" in capsys.readouterr().out


def test_python_m_facerig_version():
    out = subprocess.run([sys.executable, "-m", "facerig", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip().startswith("facerig ")


def test_top_level_lazy_exports():
    import facerig
    from facerig.face import fit_frames, fit_image
    from facerig.model import load_model

    assert facerig.fit_image is fit_image and facerig.fit_frames is fit_frames
    assert facerig.load_model is load_model
