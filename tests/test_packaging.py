"""The distribution ships every gateway package and the console command works."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_gateway_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(("linli",) + p.parent.relative_to(ROOT / "gateway").parts)
        for p in (ROOT / "gateway").rglob("__init__.py")
    }
    assert found == listed, "add the missing packages to [tool.setuptools] packages"


def test_console_command_runs():
    out = subprocess.run([sys.executable, "-m", "linli.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("linli ")


def test_unknown_command_fails_with_usage():
    out = subprocess.run([sys.executable, "-m", "linli.cli", "no-such-command"], capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice" in out.stderr
