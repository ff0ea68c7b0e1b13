"""`voicebridge calls list|show|hangup|transfer`: live calls, through the daemon's control socket."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from voicebridge.cli.control_client import DaemonUnreachable, client_for, request_op
from voicebridge.cli.errors import CliError
from voicebridge.cli.options import SocketConfigOption, SocketOption, json_option

calls_app = typer.Typer(
    help="See and act on live calls (over the local control socket).", no_args_is_help=True
)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def calls_table(calls: list[dict[str, Any]], status: str = "") -> Table:
    """The rich table `calls list` prints (and `--watch` refreshes)."""
    table = Table(
        title=f"{len(calls)} live call{'s' if len(calls) != 1 else ''}{status}", title_justify="left"
    )
    on_nodes = any("node_id" in call for call in calls)  # `--cluster`: each call names its node
    columns = ("call sid", "provider", "from", "to", "state", "duration", "turns", "caller said last")
    for column in ("node", *columns) if on_nodes else columns:
        table.add_column(column, no_wrap=column != "caller said last", overflow="fold")
    for call in sorted(calls, key=lambda c: -float(c.get("duration_s", 0))):
        table.add_row(
            *((str(call.get("node_id", "")),) if on_nodes else ()),
            str(call.get("call_sid", "")),
            str(call.get("provider", "")),
            str(call.get("from", "")),
            str(call.get("to", "")),
            str(call.get("state", "")),
            _duration(float(call.get("duration_s", 0))),
            str(call.get("turns", 0)),
            str(call.get("last_caller_text", ""))[:60],
        )
    return table


@calls_app.command("list")
def calls_list(
    as_json: Annotated[bool, json_option()] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every second until Ctrl-C.")] = False,
    cluster: Annotated[
        bool, typer.Option("--cluster", help="Every node's calls ([cluster] redis_url), each with its node.")
    ] = False,
    config: SocketConfigOption = None,
    socket_path: SocketOption = None,
) -> None:
    """Show live calls: sid, provider, numbers, state, duration, turns, what the caller said last."""
    client = client_for(config, socket_path)
    listed = request_op(client, "list", **({"cluster": True} if cluster else {}))
    calls = listed["calls"]
    if as_json:
        typer.echo(json.dumps(listed))
        return
    if not watch:
        Console().print(calls_table(calls))
        for node, state in sorted(listed.get("nodes", {}).items()):
            if state != "ok":
                typer.echo(f"node {node}: {state} (its calls are not listed)", err=True)
        return
    try:
        with Live(calls_table(calls), refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(1.0)
                try:
                    calls = client.request("list", **({"cluster": True} if cluster else {}))["calls"]
                except DaemonUnreachable as exc:
                    live.update(calls_table(calls, " — daemon gone"))
                    raise CliError(str(exc), exit_code=1) from None
                live.update(calls_table(calls, f" — {time.strftime('%H:%M:%S')}"))
    except KeyboardInterrupt:
        pass


@calls_app.command("show")
def calls_show(
    call_sid: Annotated[str, typer.Argument(help="The call's sid (from `calls list`).")],
    config: SocketConfigOption = None,
    socket_path: SocketOption = None,
) -> None:
    """Everything known about one call, live or recently ended, as JSON."""
    typer.echo(json.dumps(request_op(client_for(config, socket_path), "show", call_sid=call_sid), indent=2))


@calls_app.command("hangup")
def calls_hangup(
    call_sid: Annotated[str, typer.Argument(help="The call's sid.")],
    config: SocketConfigOption = None,
    socket_path: SocketOption = None,
) -> None:
    """End a live call now."""
    request_op(client_for(config, socket_path), "hangup", call_sid=call_sid)
    typer.echo(f"hung up {call_sid}")


@calls_app.command("transfer")
def calls_transfer(
    call_sid: Annotated[str, typer.Argument(help="The call's sid.")],
    number: Annotated[str, typer.Argument(help="Where to transfer, e.g. +919876543210.")],
    config: SocketConfigOption = None,
    socket_path: SocketOption = None,
) -> None:
    """Say the transfer line, then hand the call to a human at NUMBER."""
    request_op(client_for(config, socket_path), "transfer", call_sid=call_sid, number=number)
    typer.echo(f"transferring {call_sid} to {number}")
