"""CLI commands for studies: sweep, plot, report (registered into asyncfl.cli)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def register(sub: Any, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add this module's subcommands to the ``asyncfl`` parser and their handlers to ``commands``."""
