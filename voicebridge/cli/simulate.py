"""`voicebridge simulate`: play WAV files as a caller (Exotel or Twilio) against a daemon and report."""

from __future__ import annotations

import asyncio
import json
import statistics
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from voicebridge.cli.errors import CliError
from voicebridge.cli.options import config_option, json_option
from voicebridge.config.load import load_settings
from voicebridge.sim.providers import SIM_PROVIDERS
from voicebridge.sim.scripted import CallReport, CallScript, SimulationError
from voicebridge.sim.simulate import load_turns, save_audio, simulate_calls, transcribe_replies

DTMF_DIGITS = set("0123456789*#")

# The rates each simulated provider offers, for the help and the refusal: "exotel 8000/16000/24000, ...".
_RATES = ", ".join(f"{name} {'/'.join(map(str, sim.rates))}" for name, sim in SIM_PROVIDERS.items())


def _daemon_url(url: str | None, config: Path | None) -> str:
    """The daemon's HTTP base URL: --url, else the configured listen address (wildcards mean loopback)."""
    if url:
        url = url.rstrip("/").replace("ws://", "http://", 1).replace("wss://", "https://", 1)
        if not url.startswith(("http://", "https://")):
            raise CliError(f"--url must be like http://127.0.0.1:8080, not {url!r}")
        return url
    server = load_settings(config).server
    host = "127.0.0.1" if server.host in ("", "0.0.0.0") else "[::1]" if server.host == "::" else server.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{server.port}"


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def report_document(report: CallReport) -> dict[str, Any]:
    """One call as JSON-ready data."""
    return {
        "call_sid": report.call_sid,
        "provider": report.script.provider,
        "ok": report.ok,
        "error": report.error,
        "close_code": report.close_code,
        "greeting": {
            "first_audio_ms": _ms(report.greeting_s),
            "seconds": round(len(report.greeting_pcm16) / 2 / report.script.sample_rate, 2),
            "text": report.greeting_text,
        },
        "turns": [
            {
                "turn": turn.number,
                "file": turn.label,
                "latency_ms": _ms(turn.latency_s),
                "reply_s": round(turn.reply_s, 2),
                "barged_in": turn.barged_in,
                "reply_text": turn.reply_text,
            }
            for turn in report.turns
        ],
    }


def _call_table(report: CallReport) -> Table:
    table = Table(title=f"call {report.call_sid} ({report.script.provider})", title_justify="left")
    for column, justify in (
        ("turn", "right"),
        ("caller", "left"),
        ("bot said", "left"),
        ("voice-to-voice", "right"),
        ("reply", "right"),
        ("barge-in", "center"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    greeting_s = len(report.greeting_pcm16) / 2 / report.script.sample_rate
    first = _ms(report.greeting_s)
    table.add_row(
        "0",
        "(answers)",
        report.greeting_text or "—",
        "—" if first is None else f"{first} ms*",
        f"{greeting_s:.1f} s",
        "",
    )
    for turn in report.turns:
        latency = _ms(turn.latency_s)
        table.add_row(
            str(turn.number),
            turn.label,
            turn.reply_text or "—",
            "no reply" if latency is None else f"{latency} ms",
            f"{turn.reply_s:.1f} s",
            "yes" if turn.barged_in else "",
        )
    table.caption = "* greeting: from `start` to its first audio"
    return table


def _load_table(reports: list[CallReport]) -> Table:
    table = Table(title=f"{len(reports)} simulated calls", title_justify="left")
    for column in ("call sid", "turns", "p50", "max", "result"):
        table.add_column(column)
    for report in reports:
        latencies = [t.latency_s for t in report.turns if t.latency_s is not None]
        table.add_row(
            report.call_sid,
            str(len(report.turns)),
            f"{_ms(statistics.median(latencies))} ms" if latencies else "—",
            f"{_ms(max(latencies))} ms" if latencies else "—",
            "ok" if report.ok else f"[red]{report.error}[/red]",
        )
    return table


def simulate(
    files: Annotated[list[Path], typer.Argument(help="WAV files, one caller turn each, in order.")],
    provider: Annotated[
        str, typer.Option(help=f"Which provider to act as: {' or '.join(SIM_PROVIDERS)}.")
    ] = "exotel",
    url: Annotated[
        str | None, typer.Option(help="The daemon, e.g. http://127.0.0.1:8080 (default: from config).")
    ] = None,
    rate: Annotated[int, typer.Option(help=f"Stream sample rate ({_RATES}).")] = 8000,
    webhook: Annotated[
        bool, typer.Option("--webhook/--no-webhook", help="Get the stream URL from the incoming webhook.")
    ] = True,
    fast: Annotated[
        bool, typer.Option("--fast", help="Send audio as fast as allowed, not in real time.")
    ] = False,
    barge_in_after: Annotated[
        float | None,
        typer.Option(help="Cut into each reply after this many seconds with the next turn."),
    ] = None,
    dtmf: Annotated[str, typer.Option(help="Keys to press after the greeting, e.g. '12#'.")] = "",
    save_reply: Annotated[Path | None, typer.Option(help="Write the bot's audio to this WAV.")] = None,
    save_call: Annotated[
        Path | None, typer.Option(help="Write both sides as a stereo WAV (left caller, right bot).")
    ] = None,
    calls: Annotated[int, typer.Option(help="Concurrent simulated calls (a load test).")] = 1,
    ramp: Annotated[float, typer.Option(help="Spread the calls' starts over this many seconds.")] = 0.0,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each reply.")] = 30.0,
    transcribe: Annotated[
        bool, typer.Option("--transcribe/--no-transcribe", help="Transcribe the bot's replies locally.")
    ] = True,
    as_json: Annotated[bool, json_option(instead_of="tables")] = False,
    # Read for the daemon's URL (server.host/port/public_url) and for --transcribe's STT settings.
    config: Annotated[Path | None, config_option("the URL and the transcription")] = None,
) -> None:
    """Call the daemon as Exotel (or Twilio) would, speaking FILES as the caller; report each turn."""
    if provider not in SIM_PROVIDERS:
        raise CliError(f"unknown provider {provider!r} (choose {' or '.join(SIM_PROVIDERS)})")
    if rate not in SIM_PROVIDERS[provider].rates:
        raise CliError(f"unsupported rate {rate} for {provider} ({_RATES})")
    if not 1 <= calls <= 1000:
        raise CliError(f"--calls must be between 1 and 1000, not {calls}")
    if ramp < 0 or timeout <= 0 or (barge_in_after is not None and barge_in_after <= 0):
        raise CliError("--ramp must be >= 0, and --timeout and --barge-in-after > 0")
    if bad := set(dtmf) - DTMF_DIGITS:
        raise CliError(f"--dtmf takes 0-9, * and #, not {''.join(sorted(bad))!r}")
    if calls > 1 and (save_reply or save_call):
        raise CliError("--save-reply and --save-call record one call; drop them or use --calls 1")
    http = _daemon_url(url, config)
    try:
        turns = load_turns(files, rate)
    except SimulationError as exc:
        raise CliError(str(exc)) from None
    script = CallScript(
        turns,
        provider=provider,  # type: ignore[arg-type]
        sample_rate=rate,
        realtime=not fast,
        use_webhook=webhook,
        barge_in_after=barge_in_after,
        dtmf=dtmf,
        timeout=timeout,
    )
    console = Console(stderr=True)
    with console.status(f"{calls} simulated {provider} call{'s' if calls > 1 else ''} to {http}…"):
        try:
            simulation = asyncio.run(simulate_calls(http, script, calls, ramp))
        except SimulationError as exc:
            raise CliError(str(exc), exit_code=1) from None
    reports = simulation.reports
    if transcribe:
        with console.status("Transcribing the bot's replies…"):
            transcribe_replies(reports, load_settings(config))
    if save_reply or save_call:
        try:
            save_audio(reports[0], save_reply, save_call)
        except OSError as exc:
            raise CliError(f"cannot write {exc.filename}: {exc.strerror}") from None

    summary = simulation.summary()
    if as_json:
        typer.echo(json.dumps({"calls": [report_document(r) for r in reports], "summary": summary}))
    else:
        _print_human(reports, summary)
    if summary["failed"]:
        raise typer.Exit(1)


def _print_human(reports: list[CallReport], summary: dict[str, Any]) -> None:
    console = Console()
    console.print(_call_table(reports[0]) if len(reports) == 1 else _load_table(reports))
    latency = summary["latency"]
    if latency["turns"]:
        console.print(
            f"voice-to-voice over {latency['turns']} turns: p50 {latency['p50_ms']} ms, "
            f"p95 {latency['p95_ms']} ms, max {latency['max_ms']} ms"
        )
    late = summary["late_frames"]
    console.print(
        f"{summary['calls']} call(s) in {summary['seconds']} s, {summary['failed']} failed; "
        f"late outbound frames: {'unknown' if late is None else int(late)}"
    )
    for report in reports:
        if not report.ok:
            console.print(f"[red]call {report.call_sid} failed:[/red] {report.error}", highlight=False)
