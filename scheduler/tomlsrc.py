"""Read a TOML file and say on which line each key was written.

tomllib returns no positions, yet every complaint about a hasched file must name its line. A
light scan of the text maps dotted key paths to lines; it is built lazily, only when an error
needs a line, because large job directories are read far more often than they are wrong.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

try:  # tomli's compiled build parses several times faster than the stdlib's pure-Python copy
    import tomli as tomllib
except ImportError:  # pragma: no cover - same parser, same messages, only slower
    import tomllib

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_END = re.compile(r"\s*\(at end of document\)$")
_HEADER = re.compile(r"^[ \t]*\[\[?(.*?)\]\]?[ \t]*(?:#.*)?$")
_HEADER_ANYWHERE = re.compile(r"^[ \t]*\[\[?([^\]\n]*)\]\]?[ \t]*(?:#[^\n]*)?$", re.M)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _printable(text: str) -> str:
    """text with its non-printable characters (newlines, NUL, ...) written as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


class SourceError(Exception):
    """A mistake in a file, reported on one line: ``file:line: field: message``."""

    def __init__(self, file: str | Path, line: int | None, field: str, message: str) -> None:
        self.file = _printable(str(file))
        self.line = line
        # A key is whatever the file says, "\n" too: the complaint must stay on one line.
        self.field = _printable(field)
        self.message = _printable(message)
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))


def split_key(text: str) -> tuple[list[str], str] | None:
    """Parse a (dotted, possibly quoted) TOML key at the start of text -> (parts, rest)."""
    parts: list[str] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos >= len(text):
            return None
        quote = text[pos]
        if quote in "\"'":
            end = text.find(quote, pos + 1)
            while quote == '"' and end > 0 and text[end - 1] == "\\":
                end = text.find(quote, end + 1)
            if end < 0:
                return None
            raw = text[pos + 1:end]
            parts.append(raw.encode().decode("unicode_escape") if quote == '"' else raw)
            pos = end + 1
        else:
            match = _BARE_KEY.match(text, pos)
            if match is None:
                return None
            parts.append(match.group())
            pos = match.end()
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos < len(text) and text[pos] == ".":
            pos += 1
            continue
        return parts, text[pos:]


class SourceMap:
    """Dotted key path -> line number of the key or table header that introduced it."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._lines: dict[tuple[str, ...], int] | None = None
        self._headers: dict[tuple[str, ...], int] | None = None

    def _scan(self) -> dict[tuple[str, ...], int]:
        found: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        in_string = None  # the delimiter of an open multi-line string
        for number, line in enumerate(self._text.splitlines(), start=1):
            if in_string:
                if line.count(in_string) % 2 == 1:
                    in_string = None
                continue
            header = _HEADER.match(line)
            if header:
                key = split_key(header.group(1))
                if key and not key[1].strip():
                    table = tuple(key[0])
                    for end in range(1, len(table) + 1):  # [a.b] also introduces a
                        found.setdefault(table[:end], number)
                    continue
            key = split_key(line)
            if key and key[1].startswith("="):
                found.setdefault(table + tuple(key[0]), number)
                for delimiter in ('"""', "'''"):
                    if key[1].count(delimiter) % 2 == 1:
                        in_string = delimiter
        return found

    def header_line(self, *path: str) -> int | None:
        """Line of a ``[table]`` header: a cheap scan that skips ordinary keys."""
        if self._headers is None:
            self._headers = {}
            number, position = 1, 0
            for match in _HEADER_ANYWHERE.finditer(self._text):
                number += self._text.count("\n", position, match.start())
                position = match.start()
                key = split_key(match.group(1))
                if key and not key[1].strip():
                    self._headers.setdefault(tuple(key[0]), number)
        return self._headers.get(tuple(path))

    def line(self, *path: str) -> int | None:
        """Line of the longest prefix of path that was written (inline tables share a line)."""
        if self._lines is None:
            self._lines = self._scan()
        for end in range(len(path), 0, -1):
            number = self._lines.get(tuple(path[:end]))
            if number is not None:
                return number
        return None


def read_toml(
    path: str | Path, error: type[SourceError] = SourceError
) -> tuple[dict[str, Any], SourceMap]:
    """Parse path; unreadable or malformed files raise `error` with file, line and cause."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise error(path, None, "cannot read", exc.strerror or str(exc)) from None
    except UnicodeDecodeError as exc:
        raise error(path, None, "cannot read", f"not UTF-8 text ({exc.reason})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = None
        position = _TOML_POSITION.search(message)
        if position:
            line = int(position.group(1))
            message = message[: position.start()] + f" (column {position.group(2)})"
        else:
            end = _TOML_END.search(message)
            if end:
                line = max(len(text.splitlines()), 1)
                message = message[: end.start()] + " (at end of file)"
        raise error(path, line, "syntax", message[:1].lower() + message[1:]) from None
    return data, SourceMap(text)
