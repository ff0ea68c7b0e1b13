"""`voicebridge outbox list|show|retry`: stored call records, through the daemon's control socket."""

from __future__ import annotations

import datetime
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from voicebridge.cli.control_client import client_for, request_op
from voicebridge.cli.errors import CliError
from voicebridge.cli.options import SocketConfigOption, SocketOption, json_option

outbox_app = typer.Typer(
    help="See and re-queue stored call records (over the local control socket).", no_args_is_help=True
)


def _when(timestamp: Any) -> str:
    if not isinstance(timestamp, int | float) or not timestamp:
        return ""
    try:
        return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):  # a daemon's odd answer is shown blank, not a traceback
        return ""


def records_table(records: list[dict[str, Any]], counts: dict[str, int]) -> Table:
    """The rich table `outbox list` prints, titled with the counts by state."""
    summary = ", ".join(f"{counts.get(state, 0)} {state}" for state in ("pending", "parked", "delivered"))
    table = Table(title=f"{len(records)} record(s) shown — {summary}", title_justify="left")
    for column in ("id", "key", "kind", "state", "attempts", "last error", "stored"):
        table.add_column(column, overflow="fold")
    for record in records:
        # Text, not markup: keys and errors come from outside and may hold brackets.
        table.add_row(
            *(
                Text(str(record.get(field, "")))
                for field in ("id", "key", "kind", "state", "attempts", "last_error")
            ),
            _when(record.get("created_at")),
        )
    return table


@outbox_app.command("list")
def outbox_list(
    state: Annotated[
        str,
        typer.Option(help="undelivered (pending and parked), all, pending, parked, delivered or local."),
    ] = "undelivered",
    call_sid: Annotated[str | None, typer.Option("--call", help="Only this call's records.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, oldest first (1-1000).")] = 200,
    as_json: Annotated[bool, json_option()] = False,
    config: SocketConfigOption = None,
    socket_path: SocketOption = None,
) -> None:
    """Records not yet delivered (or --state): key, kind, state, attempts and why the last one failed."""
    params: dict[str, str | int] = {"state": state, "limit": limit}
    if call_sid:
        params["call_sid"] = call_sid
    answer = request_op(client_for(config, socket_path), "outbox_list", **params)
    if as_json:
        typer.echo(json.dumps(answer))
        return
    Console().print(records_table(answer.get("records", []), answer.get("counts", {})))


@outbox_app.command("show")
def outbox_show(
    record: Annotated[str, typer.Argument(help="The record's key or id (from `outbox list`).")],
    config: SocketConfigOption = None,
    socket_path: SocketOption = None,
) -> None:
    """One record with its payload, as JSON."""
    typer.echo(
        json.dumps(request_op(client_for(config, socket_path), "outbox_show", record=record), indent=2)
    )


@outbox_app.command("retry")
def outbox_retry(
    record: Annotated[str | None, typer.Argument(help="The record's key or id.")] = None,
    all_parked: Annotated[bool, typer.Option("--all-parked", help="Re-queue every parked record.")] = False,
    all_local: Annotated[
        bool, typer.Option("--all-local", help="Send every record kept while no backend took records.")
    ] = False,
    config: SocketConfigOption = None,
    socket_path: SocketOption = None,
) -> None:
    """Deliver a parked, pending or local record now; or every parked (--all-parked) or local (--all-local)
    one. Local records were stored while the backend took none (echo, openai): they are sent only when
    asked, once backend.kind is node."""
    if (record is not None) + all_parked + all_local != 1:
        raise CliError("give one record (key or id), --all-parked or --all-local")
    client = client_for(config, socket_path)
    if all_parked or all_local:
        answer = request_op(
            client, "outbox_retry", **({"all_local": True} if all_local else {"all_parked": True})
        )
    else:
        answer = request_op(client, "outbox_retry", record=record or "")
    typer.echo(f"queued {answer.get('queued', 0)} record(s) for delivery")
