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
