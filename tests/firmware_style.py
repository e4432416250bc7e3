"""The firmware house rules (STYLE.md, "Firmware"), checked on the source with ``ast``: shared
by the drivers' and the roles' package tests."""

from __future__ import annotations

import ast
from pathlib import Path

HARDWARE = {"machine", "network", "onewire", "esp32"}


def check_declarations_only(src: Path, tree: ast.Module) -> None:
    """Module level holds only imports (never of hardware modules), const() constants, constant
    data, a docstring, functions and classes; ``%`` formatting only."""
    for node in tree.body:
        where = "%s:%d" % (src.name, node.lineno)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not HARDWARE & {n.split(".")[0] for n in names}, (
                "%s: only the HAL imports machine/network; import inside the function that needs it" % where
            )
        elif isinstance(node, ast.Assign):
            v = node.value
            if isinstance(v, ast.Call):
                assert isinstance(v.func, ast.Name) and v.func.id == "const", (
                    "%s: no calls at module level (I/O, singletons); const() only" % where
                )
            else:
                assert isinstance(v, (ast.Constant, ast.Tuple)), "%s: module-level data must be constant" % where
                if isinstance(v, ast.Constant) and isinstance(v.value, int):
                    raise AssertionError("%s: integer constants go through const()" % where)
        elif isinstance(node, ast.Expr):
            assert isinstance(node.value, ast.Constant), "%s: a docstring is the only expression allowed" % where
        else:
            assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)), (
                "%s: unexpected module-level %s" % (where, type(node).__name__)
            )
    for node in ast.walk(tree):
        assert not isinstance(node, ast.JoinedStr), "%s:%d: use %% formatting, not f-strings" % (src.name, node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr != "format", "%s:%d: use %% formatting" % (src.name, node.lineno)


def import_heap(mpy, modules, preload: str = "") -> int:
    """Heap (bytes) that importing ``modules`` takes on the unix port, after ``preload`` imports;
    fails if importing touched any hardware (nothing may happen at import time)."""
    import json

    r = mpy.run(
        "import gc, json\n"
        + ("import %s\n" % preload if preload else "")
        + "gc.collect()\n"
        "before = gc.mem_alloc()\n"
        "for m in %r:\n"
        "    __import__(m)\n"
        "gc.collect()\n"
        "print(json.dumps(gc.mem_alloc() - before))\n" % list(modules)
    ).expect_ok()
    used = json.loads(r.stdout.strip().splitlines()[-1])
    print("heap after importing %d modules: %d bytes" % (len(modules), used))
    rec = r.record
    assert not (rec["pins"] or rec["pwm"] or rec["uart_tx"] or rec["i2c_writes"] or rec["spi_writes"]), "import did I/O"
    return used
