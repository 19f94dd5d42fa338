"""How the CLI prints: JSON for pipelines, rich tables for people."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title)
    for column in columns:
        t.add_column(column, overflow="fold")  # ids and verdicts whole, wrapped if need be
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    console.print(t)


def warn(message: str) -> None:
    """A line on stderr: text as written (never markup), one line whatever the width."""
    err_console.print(escape(message), soft_wrap=True)


def fail(message: str, code: int = 1) -> None:
    # the message is text, never markup: "[a-z0-9]" in a pattern must print as written
    # soft_wrap: one line whatever the width (rich wraps at 80 columns off a terminal,
    # which would split a CI log's message mid-list)
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise SystemExit(code)
