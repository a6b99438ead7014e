"""The `scopehub` command. Each subcommand lives in its own module; this one only dispatches
and turns user mistakes into one-line errors with a non-zero exit."""

from __future__ import annotations

import argparse
import sys

from . import cmd_bench, cmd_cluster, cmd_conform, cmd_demo, cmd_fuzz, cmd_serve, cmd_sim


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scopehub",
        description="Reference server, conformance suite and simulator for horizontally scaled "
        "WebSocket fanout (the Multica realtime protocol, docs/protocol.md).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in (cmd_sim, cmd_serve, cmd_cluster, cmd_conform, cmd_fuzz, cmd_bench, cmd_demo):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except UserError as e:
        print(f"scopehub {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
