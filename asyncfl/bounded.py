"""Bounded reading of files asyncfl did not necessarily write itself (a run directory someone
edited, a disk that lost blocks, a data file from elsewhere): strict UTF-8, JSON with limits on
size, nesting depth and the length of a number, and no following of symbolic links.

Every refusal is an :class:`InputLimitError` (a ``ValueError``) whose ``reason`` is a short phrase;
callers turn it into their own one-line user error naming the file. Nothing here can hang (a FIFO
is refused, not read), recurse without bound or convert a 5,000-digit number.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

MAX_NUMBER_CHARS = 100
"""Longest number text accepted in JSON (an int64 has 20 characters, a float's repr at most 24)."""


class InputLimitError(ValueError):
    """Input that is not what it must be: ``reason`` says why (one phrase, no path)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class SymlinkError(InputLimitError):
    """A symbolic link where a regular file must be."""

    def __init__(self) -> None:
        super().__init__("is a symbolic link (a run directory holds no links where its files belong)")


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def is_link(path: str | Path) -> bool:
    return os.path.islink(path)


def open_nofollow(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link as the last path component (:class:`SymlinkError`)."""
    try:
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as exc:
        if is_link(path):  # ELOOP on Linux, EMLINK/EFTYPE elsewhere
            raise SymlinkError() from None
        raise exc


def read_file(path: str | Path, max_bytes: int | None, *, follow: bool = False) -> bytes:
    """The bytes of regular file ``path``, never through a symbolic link (unless ``follow``),
    refused (not read) when longer than ``max_bytes``. A FIFO, device or directory is refused
    without blocking. FileNotFoundError and other OSErrors pass through."""
    if follow:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | _CLOEXEC)
    else:
        fd = open_nofollow(path, os.O_RDONLY | _NONBLOCK)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputLimitError("is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise InputLimitError("is not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise InputLimitError(f"is larger ({st.st_size:,} bytes) than the {max_bytes:,} bytes allowed")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if max_bytes is not None and total > max_bytes:
                raise InputLimitError(f"is larger than the {max_bytes:,} bytes allowed")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def decode_utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputLimitError(f"is not UTF-8 text (byte {exc.start})") from None


# A string runs to its closing quote, or to the end of the text when unclosed (so that every
# character is scanned once: linear time on any input).
_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


def json_depth(text: str, limit: int) -> int:
    """Nesting depth of JSON ``text`` (strings skipped), counting stops past ``limit``."""
    depth = deepest = 0
    for m in _BRACKETS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif c in "]}":
            depth -= 1
    return deepest


def _number(kind: type) -> Any:
    def parse(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            raise InputLimitError(f"holds a number of {len(text):,} characters (at most {MAX_NUMBER_CHARS})")
        return kind(text)

    return parse


_INT, _FLOAT = _number(int), _number(float)


def loads_json(data: bytes | str, max_depth: int | None) -> Any:
    """Parse JSON strictly: UTF-8, nesting at most ``max_depth``, numbers at most
    :data:`MAX_NUMBER_CHARS` characters (``NaN`` and ``Infinity``, which Python writes, pass).
    With ``max_depth`` None (large data files, where a scan first would cost seconds) the depth
    is bounded only by the recursion limit of the C parser, which fails fast."""
    text = decode_utf8(data) if isinstance(data, bytes) else data
    if max_depth is not None and json_depth(text, max_depth) > max_depth:
        raise InputLimitError(f"is nested more than {max_depth} levels deep")
    try:
        return json.loads(text, parse_int=_INT, parse_float=_FLOAT)
    except InputLimitError:
        raise
    except json.JSONDecodeError as exc:
        raise InputLimitError(f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise InputLimitError("is nested too deeply") from None
    except ValueError as exc:
        raise InputLimitError(f"is not valid JSON ({type(exc).__name__})") from None


def read_json(path: str | Path, max_bytes: int, max_depth: int) -> Any:
    """:func:`read_file` then :func:`loads_json`."""
    return loads_json(read_file(path, max_bytes), max_depth)


__all__ = [
    "MAX_NUMBER_CHARS",
    "InputLimitError",
    "SymlinkError",
    "decode_utf8",
    "is_link",
    "json_depth",
    "loads_json",
    "open_nofollow",
    "read_file",
    "read_json",
]
