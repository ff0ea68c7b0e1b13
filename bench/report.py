"""The benchmark suite's outputs: a markdown table of every figure, and a plot of latency against calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGETS = {
    "one_call_p50_ms": 700,
    "one_call_p95_ms": 1000,
    "capacity_p95_ms": 1500,
    "capacity_calls": 30,
    "rss_per_call_mb": 5,
    "memory_ratio_at_10": 10,
}


def _mark(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def _at_least(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        value = f"{value:,.1f}".rstrip("0").rstrip(".")
    return f"{value}{unit}"


def markdown(results: dict[str, Any]) -> str:
    """The whole run as markdown: headline figures against targets, then each table."""
    summary = results["summary"]
    one = results["one_call"]
    lines = [
        "# voicebridge benchmark",
        "",
        f"{results['machine']}. Command: `{results['command']}`. Started {results['started']}, took "
        f"{results['minutes']:.0f} min.",
        "",
        "## Headline",
        "",
        "| figure | measured | target | |",
        "| --- | --- | --- | --- |",
        f"| one call, voice-to-voice p50 (Piper, echo) | {_fmt(one['p50_ms'], ' ms')} | ≤ 700 ms | "
        f"{_mark(None if one['p50_ms'] is None else one['p50_ms'] <= TARGETS['one_call_p50_ms'])} |",
        f"| one call, voice-to-voice p95 | {_fmt(one['p95_ms'], ' ms')} | ≤ 1000 ms | "
        f"{_mark(None if one['p95_ms'] is None else one['p95_ms'] <= TARGETS['one_call_p95_ms'])} |",
        f"| most concurrent calls held (p95 ≤ 1.5 s, 0 late frames, none refused; Azure TTS fake) | "
        f"{_fmt(summary['capacity_calls'])} | ≥ 30 | "
        f"{_mark((summary['capacity_calls'] or 0) >= TARGETS['capacity_calls'])} |",
        f"| RSS idle (shared design) | {_fmt(summary['rss_idle_mb'], ' MB')} | | |",
        f"| RSS per additional call (shared) | {_fmt(summary['rss_per_call_mb'], ' MB')} | ≤ 5 MB | "
        f"{_mark(None if summary['rss_per_call_mb'] is None else summary['rss_per_call_mb'] <= 5)} |",
        f"| RSS per additional call (model per call) | {_fmt(summary['naive_rss_per_call_mb'], ' MB')} | | |",
        f"| memory the calls take at 10 calls (RSS over the fresh daemon), model-per-call ÷ shared | "
        f"{_fmt(summary['call_memory_ratio_at_10'], '×')} | ≥ 10× | "
        f"{_mark(_at_least(summary['call_memory_ratio_at_10'], 10))} |",
        f"| whole-process RSS at 10 calls, model-per-call ÷ shared | "
        f"{_fmt(summary['process_rss_ratio_at_10'], '×')} | ≥ 10× | "
        f"{_mark(_at_least(summary['process_rss_ratio_at_10'], 10))} |",
        f"| p95 voice-to-voice at 10 calls, model-per-call ÷ shared | "
        f"{_fmt(summary['p95_ratio_at_10'], '×')} | | |",
        "",
        "## Calls: voice-to-voice against concurrent calls",
        "",
        "Each caller speaks a 2-4 s turn every ~6 s (100 ms Exotel chunks in real time) and waits for the "
        "reply; TTS is the Azure engine against the local fake answering with pre-rendered speech "
        f"({results['settings']['azure_first_audio_ms']:g} ms to first audio); the callers run on the same "
        "cores as the daemon. RSS idle is read before the level, loaded is the median while every call "
        "was live.",
        "",
        "| design | calls | turns | p50 | p95 | max | late frames | refused | failed | missed replies "
        "| RSS idle | RSS loaded | MB/call | STT mean | held |",
        "| --- " + "| ---: " * 13 + "| --- |",
    ]
    for row in results["levels"]:
        per_call = (
            round((row["rss_loaded_mb"] - row["rss_idle_mb"]) / row["calls"], 1)
            if row["rss_loaded_mb"]
            else None
        )
        lines.append(
            f"| {row['design']} | {row['calls']} | {row['turns']} | {_fmt(row['p50_ms'])} | "
            f"{_fmt(row['p95_ms'])} | {_fmt(row['max_ms'])} | {row['late_frames']:.0f} | {row['refused']} | "
            f"{row['failed']} | {row['missed_replies']} | {_fmt(row['rss_idle_mb'])} | "
            f"{_fmt(row['rss_loaded_mb'])} | {_fmt(per_call)} | {_fmt(row['stt_ms'])} | "
            f"{'yes' if row['held'] else 'no'} |"
        )
    lines += [
        "",
        "Times in ms, memory in MB. *held*: every call admitted and answered, p95 ≤ 1.5 s, no late frame.",
        "",
        "## STT under concurrency (in-process)",
        "",
        "| design | streams | utterances | p50 | p95 | utterances/s | WER | model memory |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["stt"]:
        lines.append(
            f"| {row['design']} | {row['concurrency']} | {row['utterances']} | {row['p50_ms']} ms | "
            f"{row['p95_ms']} ms | {row['per_second']} | {row['wer_pct']}% | "
            f"{_fmt(row['models_mb'], ' MB')} |"
        )
    lines += [
        "",
        "## One call (local Piper TTS, echo backend)",
        "",
        f"{one['turns']} turns: p50 {_fmt(one['p50_ms'])} ms, p95 {_fmt(one['p95_ms'])} ms, max "
        f"{_fmt(one['max_ms'])} ms, late frames {one['late_frames']:.0f}; daemon STT mean "
        f"{_fmt(one['stt_ms'])} ms.",
        "",
        "![voice-to-voice against concurrent calls](latency_vs_calls.png)",
        "",
    ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """p50 and p95 voice-to-voice against concurrent calls, one line per design, with the 1.5 s target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    styles = {"shared": "tab:blue", "per-call": "tab:red"}
    for design, colour in styles.items():
        rows = [r for r in results["levels"] if r["design"] == design and r["p95_ms"] is not None]
        if not rows:
            continue
        calls = [r["calls"] for r in rows]
        axes.plot(calls, [r["p50_ms"] for r in rows], "o--", color=colour, label=f"{design} p50")
        axes.plot(calls, [r["p95_ms"] for r in rows], "o-", color=colour, label=f"{design} p95")
        for r in rows:
            if r["refused"]:
                axes.annotate(f"{r['refused']} refused", (r["calls"], r["p95_ms"]), fontsize=7)
    axes.axhline(1500, color="grey", linestyle=":", label="p95 target 1.5 s")
    axes.set_xlabel("concurrent calls (each a 2-4 s turn every ~6 s)")
    axes.set_ylabel("voice-to-voice latency (ms)")
    axes.set_title("voicebridge on 2 cores: latency against concurrent calls")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write(results: dict[str, Any], out: Path) -> list[Path]:
    """results.json, results.md and latency_vs_calls.png in `out`; returns their paths."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "results.md", out / "latency_vs_calls.png"]
    paths[0].write_text(json.dumps(results, indent=2) + "\n")
    paths[1].write_text(markdown(results))
    plot(results, paths[2])
    return paths
