"""`voicebridge dial +9198…`: place one outbound call through the running daemon (its control socket)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from voicebridge.cli.control_client import client_for, request_op
from voicebridge.cli.errors import CliError
from voicebridge.cli.options import SocketConfigOption, SocketOption, json_option


def context_pairs(pairs: list[str]) -> dict[str, str]:
    """`key=value` options as a dict; the daemon checks keys and values as it does an inbound call's."""
    context: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--context takes key=value, got {pair[:60]!r}")
        context[key] = value
    return context


def dial(
    number: Annotated[str, typer.Argument(help="The number to call, E.164 (+ and 8-15 digits).")],
    from_number: Annotated[
        str, typer.Option("--from", help="Caller id to show (default: the provider's caller_id).")
    ] = "",
    context: Annotated[
        list[str] | None, typer.Option("--context", help="The call's context, key=value (repeatable).")
    ] = None,
    provider: Annotated[
        str, typer.Option("--provider", help="exotel or twilio (default: outbound.default_provider).")
    ] = "",
    as_json: Annotated[bool, json_option()] = False,
    config: SocketConfigOption = None,
    socket_path: SocketOption = None,
) -> None:
    """Place one outbound call; prints its call sid."""
    params: dict[str, str | dict[str, str]] = {"to": number, "context": context_pairs(context or [])}
    if from_number:
        params["from"] = from_number
    if provider:
        params["provider"] = provider
    result = request_op(client_for(config, socket_path), "dial", **params)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"{result['call_sid']}  ({result['provider']})")
