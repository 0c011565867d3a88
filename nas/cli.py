"""The `nas` command: a thin argparse front over one module per subcommand.

Each module in `nas.commands` defines HELP (one line), `add_arguments(parser)` and `run(args) -> int`.
Command modules import only the standard library at top level; torch, onnxruntime, optuna and matplotlib
are imported inside `run`, so `nas --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from nas.core.errors import NasUserError, one_line

# name -> module under nas.commands, in the order `nas --help` lists them.
_COMMANDS = {
    "search": "search",
    "report": "report",
    "export": "export",
    "targets": "targets",
    "spaces": "spaces",
    "inspect": "inspect_cmd",
    "predict": "predict",
    "quality": "quality",
    "profile": "profile",
    "calibrate": "calibrate",
    "bundle": "bundle",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2 (its default code, shorter text)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")  # argparse quotes some values raw


def _command_modules():
    for name, module in _COMMANDS.items():
        try:
            yield name, importlib.import_module(f"nas.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"nas.commands.{module}":
                raise


def build_parser() -> argparse.ArgumentParser:
    from nas.commands._common import bound_number_flags
    from nas.core.version import __version__

    parser = _Parser(
        prog="nas",
        description="Hardware-aware architecture search for small decoder-only LMs (Llama family). "
        "Start with: nas search --target pixel8",
    )
    parser.add_argument("--version", action="version", version=f"nas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in _command_modules():
        cmd = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(cmd)
        bound_number_flags(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    previous = signal.signal(signal.SIGTERM, _terminate)  # SIGTERM stops a command as Ctrl-C does
    try:
        return int(args._run(args) or 0)
    except NasUserError as exc:
        print(f"nas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nas {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`nas ... --json | head`): stop quietly, as Unix tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
