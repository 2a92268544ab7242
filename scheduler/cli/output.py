"""How the CLI shows answers: aligned plain-text tables for people, --json for programs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

from scheduler.units import format_duration

Column = tuple[str, Callable[[dict[str, Any]], Any]]


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--json on a command; `hasched --json CMD` (the root group's global option) too."""
    def either(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        return value or bool(ctx.find_root().params.get("as_json"))

    return click.option("--json", "as_json", is_flag=True, callback=either,
                        help="Print the server's JSON answer instead of a table.")(func)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return " ".join(str(value).split())


def print_table(rows: Iterable[dict[str, Any]], columns: Sequence[Column],
                empty: str = "(none)") -> None:
    grid = [[title for title, _ in columns]]
    grid += [[cell(get(row)) for _, get in columns] for row in rows]
    if len(grid) == 1:
        click.echo(empty)
        return
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns))]
    for line in grid:
        click.echo("  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)).rstrip())


def show_record(record: dict[str, Any], order: Sequence[str], as_json: bool) -> None:
    """One object for a script (`--json`) or for a person (`key: value` lines)."""
    if as_json:
        print_json(record)
    else:
        print_record(record, order)


def print_record(record: dict[str, Any], order: Sequence[str] = ()) -> None:
    """One object as `key: value` lines, the keys in `order` first, the rest sorted."""
    keys = [k for k in order if k in record] + sorted(k for k in record if k not in order)
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        click.echo(f"{key + ':':<{width + 1}} {cell(record[key])}")


def short_time(value: Any) -> Any:
    """An ISO time to the second, for tables ('2026-12-01T01:30:00.123456Z' -> '...:00Z')."""
    if not isinstance(value, str) or "." not in value:
        return value
    head, _, tail = value.partition(".")
    zone = tail.lstrip("0123456789")
    return head + zone


def duration(seconds: Any) -> Any:
    """Seconds as the job files write them (units.format_duration): 300 -> '5m', 5400 ->
    '1h30m'; anything that is not a number of seconds as it is."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
        return seconds
    return format_duration(seconds)


def stale_line(definitions: Any) -> str | None:
    """One line saying that the definitions in force are stale (the last reload failed), or
    None when they are those of the files."""
    if not isinstance(definitions, dict) or not definitions.get("stale"):
        return None
    errors = definitions.get("errors") or []
    first = f"; first: {errors[0]}" if errors else ""
    return (f"job definitions are STALE: the reload at {short_time(definitions.get('failed_at'))}"
            f" failed with {len(errors)} error(s){first}")
