"""The examples in the gateway's docstrings are run, so they stay true."""

import doctest
import importlib
import pkgutil

import pytest

import linli

MODULES = sorted(m.name for m in pkgutil.walk_packages(linli.__path__, "linli."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional dependency (e.g. onnxruntime) missing here
        pytest.skip("%s: %s" % (name, exc))
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
