"""What every CLI command shares: the settings and API client of this invocation."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from shipway.cli.client import ApiClient, ApiError
from shipway.cli.output import fail
from shipway.settings import Settings

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
AllowSignatureChange = Annotated[
    bool,
    typer.Option(
        "--allow-signature-change",
        help="Serve the build even though its inputs/outputs differ in ways that break the "
        "serving build's clients (refused otherwise); recorded in the audit trail.",
    ),
]


class State:
    settings: Settings
    api_url: str
    token: str

    def client(self) -> ApiClient:
        return ApiClient(self.api_url, self.token)


state = State()


def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        with state.client() as client:
            return fn(client, *args, **kwargs)
    except ApiError as exc:
        fail(str(exc), 2 if exc.usage else 1)
