"""Errors a user can cause, each with its own process exit code.

Internal bugs raise ordinary exceptions; everything here is printed as one line by the CLI.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED_SIGINT = 130
EXIT_INTERRUPTED_SIGTERM = 143


class AsyncFLError(Exception):
    """Base class of errors meant for the user; ``exit_code`` is the process exit status."""

    exit_code = EXIT_FAILED

    def one_line(self) -> str:
        return " ".join(str(self).split())


class UserError(AsyncFLError):
    """Bad input: scenario file, CLI argument, missing data set, impossible settings (exit 2)."""

    exit_code = EXIT_USAGE


class ScenarioError(UserError):
    """A scenario key has a bad value. ``key`` is the dotted path, e.g. ``server.buffer_size``."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class DataNotFoundError(UserError):
    """Data set files are missing and cannot be downloaded."""


class RunDirError(UserError):
    """A run directory is missing, incomplete or not an asyncfl run."""


class PluginError(UserError):
    """An installed plug-in (a Python entry point of an ``asyncfl.*`` group) fails to load or
    declares an invalid component (exit 2)."""


class DivergedError(AsyncFLError):
    """NaN or Inf appeared in a model, update or loss (exit 3)."""

    exit_code = EXIT_DIVERGED

    def __init__(self, what: str, server_version: int, client: int | None = None) -> None:
        self.what = what
        self.server_version = server_version
        self.client = client
        where = f"at server version {server_version}"
        if client is not None:
            where += f", update of client {client}"
        super().__init__(f"diverged: non-finite {what} {where}")


__all__ = [
    "EXIT_DIVERGED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED_SIGINT",
    "EXIT_INTERRUPTED_SIGTERM",
    "EXIT_OK",
    "EXIT_USAGE",
    "AsyncFLError",
    "DataNotFoundError",
    "DivergedError",
    "PluginError",
    "RunDirError",
    "ScenarioError",
    "UserError",
]
