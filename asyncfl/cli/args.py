"""Argument types and options shared by the command groups (one place, so no group imports another)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

from asyncfl.errors import EXIT_USAGE


class Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments in one line with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"asyncfl: error: {message} (see {self.prog} --help)\n")


def whole_number(minimum: int) -> Callable[[str], int]:
    """argparse type of a count >= ``minimum``: anything else is a one-line exit 2 naming the flag."""
    allowed = "a positive integer" if minimum == 1 else f"a whole number >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}")
        return value

    return parse


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key; VALUE is a YAML scalar (e.g. server.max_staleness=null)",
    )
    p.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="where numbers are computed")


__all__ = ["Parser", "add_run_args", "whole_number"]
