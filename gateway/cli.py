"""The `linli` console command.

Sub-commands are plug-ins: each lives in its own module and is named in ``COMMANDS`` as
``name -> "module:function"``. The module is imported only when that sub-command runs, so a
missing optional dependency (onnxruntime on a broker-only box, say) breaks one command with a
clear message instead of the whole tool.

Each registered function has the signature ``register(subparsers) -> None`` and must set
``handler=callable(args) -> int`` on the parser it adds.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from linli import __version__

# name -> "module:register function"; keep sorted.
COMMANDS: dict[str, str] = {
    "demo": "linli.demo:register",
    "detect": "linli.detect_cli:register",
    "doctor": "linli.doctor:register",
    "events": "linli.nodes_cli:register_events",
    "firmware": "linli.fwbuild:register",
    "flash": "linli.flash.cli:register",
    "hw": "linli.hw:register",
    "node": "linli.nodes_cli:register_node",
    "nodes": "linli.nodes_cli:register_nodes",
    "run": "linli.service:register",
    "vectors": "linli.link.vectors:register",
    "verify": "linli.verify:register",
}


class CommandUnavailable(RuntimeError):
    """A sub-command's module could not be imported (usually a missing optional dependency)."""


def _load(spec: str):
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandUnavailable(f"{module_name}: {exc}") from exc
    return getattr(module, attr)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linli", description="linli smart-community edge tools")
    parser.add_argument("--version", action="version", version=f"linli {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None
    if argv:
        wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, spec in COMMANDS.items():
        # Import only the command being run (plus all of them for --help listings).
        if wanted is not None and wanted in COMMANDS and name != wanted:
            sub.add_parser(name, help="(run `linli %s --help`)" % name)
            continue
        try:
            _load(spec)(sub)
        except CommandUnavailable as exc:
            p = sub.add_parser(name, help=f"unavailable: {exc}")
            p.set_defaults(handler=lambda _a, _e=exc: _unavailable(_e))
    return parser


def _unavailable(exc: Exception) -> int:
    print(f"linli: this command is unavailable here: {exc}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return int(handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
