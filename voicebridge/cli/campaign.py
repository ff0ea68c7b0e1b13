"""`voicebridge campaign run|status|pause|resume|cancel`: outbound campaigns, over the control socket.

The list is read by the daemon, from the path given (made absolute here): it must be readable by the
daemon's user on the daemon's host, which is the host the control socket is on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from voicebridge.cli.control_client import client_for, request_op
from voicebridge.cli.options import SocketConfigOption, SocketOption, json_option

campaign_app = typer.Typer(
    help="Run and steer outbound campaigns (over the local control socket).", no_args_is_help=True
)
CampaignArg = Annotated[int, typer.Argument(help="The campaign's id (from `campaign status`).")]
_COUNTS = ("dialled", "in_flight", "answered", "human", "machine", "failed", "skipped", "remaining")


@campaign_app.command("run")
def campaign_run(
    csv_path: Annotated[Path, typer.Argument(help="The list: a `number` column, then context columns.")],
    concurrency: Annotated[int | None, typer.Option(help="Calls of this campaign at once.")] = None,
    rate_per_minute: Annotated[float | None, typer.Option(help="Dials a minute, at most.")] = None,
    hours: Annotated[
        str | None, typer.Option(help="Calling hours, HH:MM-HH:MM (may cross midnight).")
    ] = None,
    tz: Annotated[str | None, typer.Option(help="The calling hours' IANA time zone.")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Attempts per number, at most.")] = None,
    caller_id: Annotated[str | None, typer.Option("--from", help="Caller id (E.164) to show.")] = None,
    name: Annotated[str | None, typer.Option(help="A name for the campaign (default: the file's).")] = None,
    as_json: Annotated[bool, json_option()] = False,
    config: SocketConfigOption = None,
    socket_path: SocketOption = None,
) -> None:
    """Start a campaign; options not given take the daemon's campaigns config."""
    given = {
        "concurrency": concurrency,
        "rate_per_minute": rate_per_minute,
        "hours": hours,
        "tz": tz,
        "max_attempts": max_attempts,
        "from": caller_id,
        "name": name,
    }
    params = {key: value for key, value in given.items() if value is not None}
    answer = request_op(
        client_for(config, socket_path), "campaign_run", path=str(csv_path.absolute()), **params
    )
    if as_json:
        typer.echo(json.dumps(answer))
        return
    typer.echo(
        f"campaign {answer.get('id')} started: {answer.get('numbers')} number(s), "
        f"{answer.get('duplicates')} duplicate(s) left out, {answer.get('bad_rows')} bad row(s)"
    )
    for problem in answer.get("problems", [])[:20]:
        typer.echo(f"  line {problem.get('line')}: {problem.get('reason')}", err=True)


def _eta(seconds: Any) -> str:
    if not isinstance(seconds, int) or seconds < 0:
        return "-"
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def progress_view(status: dict[str, Any]) -> Group:
    """One campaign's progress: a bar of settled numbers and the counts `campaign status` shows."""
    total = status.get("numbers") or 0
    remaining = status.get("remaining") or 0
    hours = "in calling hours" if status.get("in_hours") else "outside calling hours"
    options = status.get("options", {})
    title = Text(
        f"campaign {status.get('id')} {status.get('name', '')!s} — {status.get('state')}, {hours} "
        f"({options.get('hours')} {options.get('tz')})"
    )
    table = Table(show_header=True, box=None)
    for column in (*_COUNTS, "eta"):
        table.add_column(column.replace("_", " "), justify="right")
    table.add_row(*(str(status.get(key, 0)) for key in _COUNTS), _eta(status.get("eta_s")))
    # In a grid row: a bare ProgressBar ends without a line break, and what follows would join it.
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=max(1, total), completed=total - remaining, width=50),
        Text(f"{total - remaining}/{total} numbers settled"),
    )
    return Group(title, bar, table)


@campaign_app.command("status")
def campaign_status(
    campaign: Annotated[int | None, typer.Argument(help="One campaign's id; none: every campaign.")] = None,
    watch: Annotated[bool, typer.Option(help="Keep the view up to date until it finishes.")] = False,
    numbers: Annotated[bool, typer.Option(help="With each number's state and outcome (JSON).")] = False,
    as_json: Annotated[bool, json_option()] = False,
    config: SocketConfigOption = None,
    socket_path: SocketOption = None,
) -> None:
    """Progress: dialled, answered, human, machine, failed, remaining, ETA."""
    client = client_for(config, socket_path)
    params: dict[str, int | bool] = {} if campaign is None else {"campaign": campaign}
    if numbers:
        params["numbers"] = True

    def fetch() -> dict[str, Any]:
        return request_op(client, "campaign_status", **params)

    answer = fetch()
    if as_json or numbers:
        typer.echo(json.dumps(answer))
        return
    statuses = answer.get("campaigns", [answer]) if campaign is None else [answer]
    console = Console()
    if not watch or campaign is None:
        for status in statuses:
            console.print(progress_view(status))
        if not statuses:
            typer.echo("no campaigns")
        return
    with Live(progress_view(answer), console=console, refresh_per_second=2) as live:
        while answer.get("state") in ("running", "paused"):
            time.sleep(1.0)
            answer = fetch()
            live.update(progress_view(answer))


def _move(op: str, campaign: int, config: Path | None, socket_path: Path | None) -> None:
    answer = request_op(client_for(config, socket_path), op, campaign=campaign)
    typer.echo(f"campaign {answer.get('id')} {answer.get('state')}")


@campaign_app.command("pause")
def campaign_pause(
    campaign: CampaignArg, config: SocketConfigOption = None, socket_path: SocketOption = None
) -> None:
    """No new dials; calls in progress finish."""
    _move("campaign_pause", campaign, config, socket_path)


@campaign_app.command("resume")
def campaign_resume(
    campaign: CampaignArg, config: SocketConfigOption = None, socket_path: SocketOption = None
) -> None:
    """Dial again where it paused."""
    _move("campaign_resume", campaign, config, socket_path)


@campaign_app.command("cancel")
def campaign_cancel(
    campaign: CampaignArg, config: SocketConfigOption = None, socket_path: SocketOption = None
) -> None:
    """Stop for good: numbers not yet dialled are skipped; calls in progress finish."""
    _move("campaign_cancel", campaign, config, socket_path)
