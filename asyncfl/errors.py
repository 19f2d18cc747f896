"""Errors a user can cause, each with its own process exit code.

Internal bugs raise ordinary exceptions; everything here is printed as one line by the CLI.
"""

from __future__ import annotations

import errno as _errno

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_DISK_FULL = 4
"""No space left on the device (ENOSPC) or the disk quota is used up (EDQUOT): free space, then
resume; nothing the run wrote is left half-written."""
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


class DamagedRunDirError(RunDirError):
    """A file of a run directory that cannot be what asyncfl wrote: not UTF-8, nested too deeply,
    a number too long, too large, a symbolic link or no regular file (exit 2)."""

    def __init__(self, path: object, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"damaged run directory, file {path}: {reason}")


class DiskFullError(AsyncFLError):
    """No space left on the device, or the quota is used up, while writing ``path`` (exit 4)."""

    exit_code = EXIT_DISK_FULL


DISK_FULL_ERRNOS = frozenset({_errno.ENOSPC, getattr(_errno, "EDQUOT", _errno.ENOSPC)})
USER_ERRNOS = frozenset(
    getattr(_errno, name)
    for name in (
        "EACCES",
        "EPERM",
        "EROFS",
        "ENOENT",
        "ENOTDIR",
        "EISDIR",
        "ELOOP",
        "ENAMETOOLONG",
        "EEXIST",
        "EFBIG",
        "ENOTEMPTY",
        "EXDEV",
        "ETXTBSY",
        "EMLINK",
    )
    if hasattr(_errno, name)
)
"""OSErrors a user causes with a path or a file system (read-only, permission, a file where a
folder must be, ...): exit 2, not an internal error."""


def os_error(exc: OSError, path: object = None, doing: str = "") -> AsyncFLError | None:
    """The user error for an OSError a user can cause (one line naming the path), or None for
    another OSError (an internal error). ``doing`` says what failed, e.g. "writing"."""
    where = path if path is not None else exc.filename
    what = exc.strerror or str(exc)
    prefix = f"{where}: " if where is not None else ""
    verb = f"{doing}: " if doing else ""
    if exc.errno in DISK_FULL_ERRNOS:
        return DiskFullError(f"{prefix}{verb}{what}")
    if exc.errno in USER_ERRNOS:
        return UserError(f"{prefix}{verb}{what}")
    return None


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
    "DISK_FULL_ERRNOS",
    "EXIT_DISK_FULL",
    "EXIT_DIVERGED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED_SIGINT",
    "EXIT_INTERRUPTED_SIGTERM",
    "EXIT_OK",
    "EXIT_USAGE",
    "USER_ERRNOS",
    "AsyncFLError",
    "DamagedRunDirError",
    "DataNotFoundError",
    "DiskFullError",
    "DivergedError",
    "PluginError",
    "RunDirError",
    "ScenarioError",
    "UserError",
    "os_error",
]
