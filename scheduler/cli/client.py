"""The CLI's REST client: where the scheduler is, which token to present, one-line errors.

Standard library only (urllib), so a CLI call costs one Python start and one request.
"""

from __future__ import annotations

import functools
import json
import os
import ssl
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

DEFAULT_URL = "http://127.0.0.1:8480"
TIMEOUT = 30.0
F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """A user-facing failure: one line on stderr, exit 1, no traceback."""

    def show(self, file: Any = None) -> None:
        click.echo(f"hasched: {self.format_message()}", err=True)


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "hasched" / "cli.toml"


def _read_cli_toml() -> dict[str, Any]:
    path = config_path()
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"{path}: {' '.join(str(exc).split())}") from None
    for key in ("url", "token_file", "ca"):
        if key in data and not isinstance(data[key], str):
            raise CliError(f"{path}: {key}: must be a string")
    return data


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The first token in a file of one token per line ('#' starts a comment). A line of the
    scheduler's tokens file, `NAME ROLE TOKEN`, gives its TOKEN."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CliError(f"token file {path}: {exc.strerror or exc}") from None
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            return fields[-1]
    raise CliError(f"token file {path}: no token in it")


@dataclass(frozen=True)
class Settings:
    url: str
    token: str | None
    ca: str | None


def resolve_settings(url: str | None, token_file: str | None, ca: str | None) -> Settings:
    """Options first, then HASCHED_* environment, then ~/.config/hasched/cli.toml."""
    env = os.environ
    toml: dict[str, Any] | None = None

    def from_toml(key: str) -> str | None:
        nonlocal toml
        if toml is None:
            toml = _read_cli_toml()
        value = toml.get(key)
        if key in ("token_file", "ca") and value:
            value = os.path.expanduser(value)
        return value

    url = url or env.get("HASCHED_URL") or from_toml("url") or DEFAULT_URL
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise CliError(f"scheduler URL {url!r}: must look like http://HOST:PORT or https://...")
    token: str | None
    if token_file:
        token = read_token_file(token_file)
    elif env.get("HASCHED_TOKEN_FILE"):
        token = read_token_file(env["HASCHED_TOKEN_FILE"])
    elif env.get("HASCHED_TOKEN"):
        token = env["HASCHED_TOKEN"].strip()
    else:
        path = from_toml("token_file")
        token = read_token_file(path) if path else None
    ca = ca or env.get("HASCHED_CA") or from_toml("ca")
    return Settings(url=url.rstrip("/"), token=token, ca=ca)


class Client:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ssl: ssl.SSLContext | None = None
        if settings.url.startswith("https:"):
            try:
                self._ssl = ssl.create_default_context(cafile=settings.ca)
            except (OSError, ssl.SSLError) as exc:
                raise CliError(f"CA file {settings.ca}: {exc}") from None

    def get_json(self, path: str, params: dict[str, Any] | None = None, auth: bool = True) -> Any:
        return json.loads(self._request("GET", path, params, auth))

    def get_bytes(self, path: str, params: dict[str, Any] | None = None) -> bytes:
        return self._request("GET", path, params, True)

    def post_json(self, path: str) -> Any:
        return json.loads(self._request("POST", path, None, True, body=b"{}"))

    def get_text(self, path: str, params: dict[str, Any] | None = None) -> str:
        return self._request("GET", path, params, True).decode("utf-8", errors="replace")

    def _request(self, method: str, path: str, params: dict[str, Any] | None, auth: bool,
                 body: bytes | None = None) -> bytes:
        url = self.settings.url + path
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if auth:
            if not self.settings.token:
                raise CliError(
                    "no API token: use --token-file, HASCHED_TOKEN_FILE or token_file in "
                    f"{config_path()}"
                )
            headers["Authorization"] = f"Bearer {self.settings.token}"
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT, context=self._ssl) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            raise CliError(_http_error_line(exc, self.settings.url)) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = getattr(reason, "strerror", None) or str(reason)
            raise CliError(f"cannot reach the scheduler at {self.settings.url}: {text}") from None
        except (TimeoutError, OSError) as exc:
            text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise CliError(f"cannot reach the scheduler at {self.settings.url}: {text}") from None


def _http_error_line(exc: urllib.error.HTTPError, base: str) -> str:
    try:
        message = json.loads(exc.read()).get("error")
    except (ValueError, AttributeError, OSError):
        message = None
    message = " ".join(str(message or exc.reason).split())
    return f"{message} (HTTP {exc.code} from {base})"


def quote(segment: str) -> str:
    """A run id or job name as one path segment (run ids contain ':' and '@')."""
    return urllib.parse.quote(segment, safe="")


def root_option(name: str) -> Any:
    """A global option given before the sub-command (`hasched --url URL jobs list`), or None."""
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().params.get(name) if ctx is not None else None


def client_options(func: F) -> F:
    """--url, --token-file and --ca on a command (or before it: the root group's global
    options, scheduler.cli.main); the command receives `client`."""
    options = [
        click.option("--ca", metavar="FILE", default=None,
                     help="CA certificate to verify an https scheduler (env HASCHED_CA)."),
        click.option("--token-file", metavar="FILE", default=None,
                     help="File holding the API token (env HASCHED_TOKEN_FILE)."),
        click.option("--url", metavar="URL", default=None,
                     help=f"Scheduler REST API (env HASCHED_URL; default {DEFAULT_URL})."),
    ]

    # functools.wraps also carries the options already declared on `func` (__click_params__).
    @functools.wraps(func)
    def wrapper(url: str | None, token_file: str | None, ca: str | None, **kw: Any) -> Any:
        settings = resolve_settings(url or root_option("url"),
                                    token_file or root_option("token_file"),
                                    ca or root_option("ca"))
        return func(client=Client(settings), **kw)

    for option in options:
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]
