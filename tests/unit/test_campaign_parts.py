"""Campaign parts without a runner: the CSV list, calling hours, the DNC list, backoff and the store's
transitions, including settling what a killed daemon left mid-attempt."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from voicebridge.campaigns import store_sql
from voicebridge.campaigns.dnc import DncUnreadable, DoNotCall
from voicebridge.campaigns.hours import CallingHours, check_zone, parse_hours
from voicebridge.campaigns.model import CampaignOptions
from voicebridge.campaigns.numbers_csv import ListRejected, normalise_number, parse_list, read_list
from voicebridge.campaigns.store import CampaignStore


def at(text: str, zone: str = "Asia/Kolkata") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


# --- the list ---------------------------------------------------------------------------------------


def test_list_numbers_and_context_columns() -> None:
    parsed = parse_list("number,name,order_id\n+919812345678,Asha,A-1\n+44 20 7946 0958,Ben,\n")
    assert [(e.number, dict(e.context)) for e in parsed.entries] == [
        ("+919812345678", {"name": "Asha", "order_id": "A-1"}),
        ("+442079460958", {"name": "Ben"}),
    ]
    assert parsed.bad_rows == 0


def test_bad_rows_are_reported_by_line_and_duplicates_dialled_once() -> None:
    text = (
        "number,name\n"
        "+919812345678,Asha\n"  # line 2
        "9812345678,no plus\n"  # 3: not E.164
        "+1234,short\n"  # 4
        "+919812345678,again\n"  # 5: a duplicate
        "+919800000001,a\x07bell\n"  # 6: a control character in context
        "+919800000002,a,b,c\n"  # 7: more fields than the header
        "+0919800000003,zero\n"  # 8: E.164 never starts with 0
    )
    parsed = parse_list(text)
    assert [e.number for e in parsed.entries] == ["+919812345678"]
    assert [line for line, _ in parsed.problems] == [3, 4, 6, 7, 8]
    assert parsed.duplicates == 1


def test_reserved_context_keys_refuse_the_row() -> None:
    parsed = parse_list("number,token,name\n+919812345678,abc,Asha\n+919812345679,,Ben\n")
    assert [e.number for e in parsed.entries] == ["+919812345679"]
    assert parsed.problems[0][0] == 2 and "reserved" in parsed.problems[0][1]


@pytest.mark.parametrize(
    "text",
    ["", "phone,name\n+919812345678,x\n", "number\nabc\n+12\n", 'number\n"+9198123456\x00\n'],
)
def test_a_list_with_nothing_to_dial_is_refused(text: str) -> None:
    with pytest.raises(ListRejected):
        parse_list(text)


def test_row_and_size_caps(tmp_path: Path) -> None:
    rows = "".join(f"+9198000{i:05d}\n" for i in range(50))
    with pytest.raises(ListRejected, match="more than 10 rows"):
        parse_list("number\n" + rows, max_rows=10)
    path = tmp_path / "big.csv"
    path.write_text("number\n" + rows)
    with pytest.raises(ListRejected, match="bytes"):
        read_list(path, max_bytes=100)
    assert len(read_list(path).entries) == 50
    path.write_bytes(b"number\n+919812345678,\xff\n")
    with pytest.raises(ListRejected, match="UTF-8"):
        read_list(path)


def test_normalise_number() -> None:
    assert normalise_number(" +91 (98) 1234-5678 ") == "+919812345678"
    assert normalise_number("+9198123456789012") is None  # 16 digits
    assert normalise_number("+91981234567x") is None
    assert normalise_number("+" + "9" * 5000) is None


# --- calling hours ----------------------------------------------------------------------------------


def test_default_hours_in_kolkata() -> None:
    hours = CallingHours()
    assert not hours.is_open(at("2026-12-07T08:59:59"))
    assert hours.is_open(at("2026-12-07T09:00:00"))
    assert hours.is_open(at("2026-12-07T20:59:59"))
    assert not hours.is_open(at("2026-12-07T21:00:00"))
    # 08:00 IST is 02:30 UTC: the zone, not the host's clock, decides.
    assert hours.seconds_until_open(at("2026-12-07T08:00:00")) == 3600
    assert hours.seconds_until_open(at("2026-12-07T22:00:00")) == 11 * 3600


def test_hours_across_midnight_and_other_zones() -> None:
    night = CallingHours("22:00", "06:00", "America/New_York")
    assert night.is_open(at("2026-12-07T23:30:00", "America/New_York"))
    assert night.is_open(at("2026-12-08T05:59:00", "America/New_York"))
    assert not night.is_open(at("2026-12-08T06:00:00", "America/New_York"))
    assert night.seconds_until_open(at("2026-12-08T12:00:00", "America/New_York")) == 10 * 3600
    # The same instant in Kolkata (22:30) is outside the default window there.
    assert not CallingHours().is_open(at("2026-12-07T12:00:00", "America/New_York"))
    assert CallingHours("18:00", "24:00").is_open(at("2026-12-07T23:59:00"))


@pytest.mark.parametrize("bad", ["9-21", "09:00-09:00", "25:00-26:00", "09:00-24:30", "x" * 100])
def test_bad_hours_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_hours(bad)


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "../../etc/passwd", "/etc/localtime"])
def test_bad_zones_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        check_zone(bad)


# --- DNC and backoff ----------------------------------------------------------------------------------


async def test_dnc_is_re_read_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "dnc.txt"
    path.write_text("# opted out\n+919812345678\n")
    dnc = DoNotCall(str(path))
    assert await dnc.blocks("+919812345678")
    assert not await dnc.blocks("+919812345679")
    path.write_text("+91 98123 45679  # asked today\n")
    os.utime(path, ns=(1, 2_000_000_000_000_000_000))  # a new mtime even within one clock tick
    assert await dnc.blocks("+919812345679")
    assert not await dnc.blocks("+919812345678")
    path.unlink()
    with pytest.raises(DncUnreadable):  # fail closed: no list, no dial
        await dnc.blocks("+919812345670")
    assert not await DoNotCall("").blocks("+919812345678")


def test_backoff_doubles_to_the_cap() -> None:
    options = CampaignOptions(retry_base_s=60, retry_cap_s=300)
    assert [options.retry_delay(n) for n in (1, 2, 3, 4, 5)] == [60, 120, 240, 300, 300]


# --- the store ------------------------------------------------------------------------------------------


async def test_attempts_are_written_before_dial_and_capped(tmp_path: Path) -> None:
    store = CampaignStore(tmp_path / "c.sqlite3")
    await store.open(0.0)
    entries = parse_list("number,name\n+919812345678,Asha\n").entries
    campaign = await store.create("t", CampaignOptions(max_attempts=2), entries)
    due = await store.next_due(campaign, 10.0)
    assert due is not None and due.number == "+919812345678" and due.context["name"] == "Asha"
    assert await store.begin_attempt(due.id, 2) == 1
    assert await store.next_due(campaign, 10.0) is None  # dialling: not due again
    await store.settle(due.id, "busy", "", "busy", 20.0)
    assert await store.next_due(campaign, 19.0) is None
    assert await store.begin_attempt(due.id, 2) == 2
    await store.settle(due.id, "busy", "", "busy", 30.0)
    assert await store.begin_attempt(due.id, 2) is None  # never a third
    await store.close()


async def test_restart_settles_rows_left_mid_attempt(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    store = CampaignStore(path)
    await store.open(0.0)
    entries = parse_list("number\n+919800000001\n+919800000002\n+919800000003\n").entries
    campaign = await store.create("t", CampaignOptions(max_attempts=2, retry_base_s=60), entries)
    first = await store.next_due(campaign, 1.0)
    assert first is not None
    await store.begin_attempt(first.id, 2)  # "killed" between the write and the dial
    second = await store.next_due(campaign, 1.0)
    assert second is not None
    await store.begin_attempt(second.id, 2)
    await store.mark_in_call(second.id, "CA1")
    await store.settle(second.id, "busy", "", "busy", 0.0)
    await store.begin_attempt(second.id, 2)  # its last attempt, in call when the daemon died
    await store.mark_in_call(second.id, "CA2")
    # No close(): the process is gone. A new store on the same file settles both rows.
    again = CampaignStore(path)
    assert await again.open(1000.0) == 2
    rows = {row["number"]: row for row in await again.numbers(campaign, 10)}
    assert rows["+919800000001"]["state"] == "pending" and rows["+919800000001"]["attempts"] == 1
    assert rows["+919800000002"]["state"] == "failed" and rows["+919800000002"]["outcome"] == "interrupted"
    third = await again.next_due(campaign, 1000.0)
    assert third is not None and third.number == "+919800000003"
    await again.begin_attempt(third.id, 2)
    assert await again.next_due(campaign, 1059.0) is None  # the settled one waits out its backoff
    retried = await again.next_due(campaign, 1060.0)
    assert retried is not None and retried.number == "+919800000001"
    await again.close()
    await store.close()


async def test_cancel_skips_pending_numbers(tmp_path: Path) -> None:
    store = CampaignStore(tmp_path / "c.sqlite3")
    await store.open(0.0)
    entries = parse_list("number\n+919800000001\n+919800000002\n").entries
    campaign = await store.create("t", CampaignOptions(), entries)
    assert await store.set_state(campaign, "paused", ("running",))
    assert not await store.set_state(campaign, "paused", ("running",))
    assert await store.set_state(campaign, "cancelled", ("running", "paused"))
    assert {row["outcome"] for row in await store.numbers(campaign, 10)} == {"cancelled"}
    assert not await store.set_state(campaign, "running", ("paused",))
    await store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    store_sql.open_database(path).execute("PRAGMA user_version=99")
    with pytest.raises(store_sql.StoreTooNew):
        store_sql.open_database(path)
