"""The values of a job's `secret_env`, read from their files when a run is dispatched.

Read at each dispatch rather than at load: a rotated secret is used from the next run on with
no reload, and the values live in no job file, in no API answer and in no log line. They travel
to the agent in the dispatch order's environment (use https between scheduler and agents).
"""

from __future__ import annotations

from collections.abc import Mapping

MAX_SECRET = 64 * 1024


class SecretError(RuntimeError):
    """A secret's file cannot be read; str() names the variable and the file, not the value."""


def read_secret_env(secret_env: Mapping[str, str]) -> dict[str, str]:
    """NAME -> value for each NAME = file; one trailing newline is dropped, as `echo` adds it."""
    values = {}
    for name, path in secret_env.items():
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_SECRET + 1)
        except OSError as e:
            raise SecretError(f"secret_env.{name}: cannot read {path}: "
                              f"{e.strerror or e}") from None
        if len(data) > MAX_SECRET:
            raise SecretError(f"secret_env.{name}: {path} is longer than {MAX_SECRET} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretError(f"secret_env.{name}: {path} is not UTF-8 text") from None
        if "\0" in text:
            raise SecretError(f"secret_env.{name}: {path} holds a NUL byte")
        values[name] = text[:-1] if text.endswith("\n") else text
    return values
