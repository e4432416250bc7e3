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


# Import name -> the distribution in [project] dependencies that provides it.
_PROVIDES = {"paho": "paho-mqtt", "serial": "pyserial", "cv2": "opencv-python-headless", "onnxruntime": "onnxruntime",
             "numpy": "numpy", "gpiozero": "gpiozero", "cryptography": "cryptography", "mpremote": "mpremote",
             "esptool": "esptool"}
# Imported only where an extra is installed, each behind a clear message: the demo's fallback broker.
_OPTIONAL = {"amqtt"}


def test_every_third_party_import_of_the_gateway_is_a_dependency():
    """`pip install linli` is enough for every command (linli flash once lacked mpremote)."""
    import ast
    import re

    deps = {re.split(r"[<>=!~;\[ ]", d, 1)[0].lower() for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    found = set()
    for p in (ROOT / "gateway").rglob("*.py"):
        if "board" in p.parts:  # the simulated board's modules run on MicroPython
            continue
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    third = found - set(sys.stdlib_module_names) - {"linli"} - _OPTIONAL
    assert third <= set(_PROVIDES), "unknown imports: %s" % sorted(third - set(_PROVIDES))
    assert {_PROVIDES[m] for m in third} <= deps
