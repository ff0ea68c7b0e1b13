"""A campaign's list: a CSV whose first column is `number` (E.164) and whose other columns become each
call's context, validated exactly as an inbound call's custom parameters are (telephony/context.py).

Bounded: the file's size and its rows are capped before anything is parsed or stored. A bad row is
reported with its line number and left out; only a list with no good row at all is refused. A number
listed twice is dialled once (its first row wins).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from voicebridge.outbound.numbers import is_e164
from voicebridge.telephony.context import call_context

# Spaces, dashes, dots and brackets people put in numbers; nothing else is forgiven.
_PUNCTUATION = re.compile(r"[ \-.()]")
MAX_ROWS = 100_000
MAX_BYTES = 20 * 1024 * 1024
# Problems listed back to the operator; the rest are only counted.
MAX_PROBLEMS_LISTED = 100
_MAX_FIELD_CHARS = 1024


class ListRejected(ValueError):
    """The list as a whole cannot be a campaign (too large, no `number` column, no good row)."""


@dataclass(frozen=True, slots=True)
class ListEntry:
    line: int
    number: str
    context: Mapping[str, str]


@dataclass(slots=True)
class NumberList:
    entries: list[ListEntry] = field(default_factory=list)
    # (line, reason), the first MAX_PROBLEMS_LISTED; `bad_rows` counts them all.
    problems: list[tuple[int, str]] = field(default_factory=list)
    bad_rows: int = 0
    duplicates: int = 0

    def problem(self, line: int, reason: str) -> None:
        self.bad_rows += 1
        if len(self.problems) < MAX_PROBLEMS_LISTED:
            self.problems.append((line, reason))


def normalise_number(text: str) -> str | None:
    """`text` as E.164 (common punctuation removed), or None when it is not one."""
    if len(text) > 40:
        return None
    number = _PUNCTUATION.sub("", text.strip())
    return number if is_e164(number) else None


def read_list(path: Path, max_rows: int = MAX_ROWS, max_bytes: int = MAX_BYTES) -> NumberList:
    """Read and validate the list at `path` (blocking: run it off the event loop)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ListRejected(f"{path.name} is {size} bytes; the limit is {max_bytes}")
        raw = path.read_bytes()
    except OSError as exc:
        raise ListRejected(f"cannot read the list: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ListRejected("the list is not UTF-8 text") from None
    return parse_list(text, max_rows)


def parse_list(text: str, max_rows: int = MAX_ROWS) -> NumberList:
    """Validate a list's text; ListRejected when nothing in it can be dialled."""
    reader = csv.reader(io.StringIO(text, newline=""))
    result = NumberList()
    seen: set[str] = set()
    try:
        header = next(reader, None)
        if header is None or not header or header[0].strip().lower() != "number":
            raise ListRejected("the first column must be headed `number`")
        columns = [name.strip() for name in header[1:]]
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(result.entries) + result.bad_rows + result.duplicates >= max_rows:
                raise ListRejected(f"the list has more than {max_rows} rows")
            _take_row(result, seen, line, row, columns)
    except csv.Error as exc:
        raise ListRejected(f"line {reader.line_num}: not CSV ({str(exc)[:80]})") from None
    if not result.entries:
        raise ListRejected(f"no row of the list can be dialled ({result.bad_rows} bad)")
    return result


def _take_row(result: NumberList, seen: set[str], line: int, row: list[str], columns: list[str]) -> None:
    if len(row) > len(columns) + 1:
        result.problem(line, f"{len(row)} fields; the header has {len(columns) + 1}")
        return
    if any(len(cell) > _MAX_FIELD_CHARS for cell in row):
        result.problem(line, f"a field is over {_MAX_FIELD_CHARS} characters")
        return
    number = normalise_number(row[0])
    if number is None:
        result.problem(line, "number is not E.164 (+ and 8-15 digits)")
        return
    if number in seen:
        result.duplicates += 1
        return
    values = {name: cell.strip() for name, cell in zip(columns, row[1:], strict=False) if cell.strip()}
    context, dropped = call_context([values])
    if dropped:
        reasons = ", ".join(f"{key} {reason}" for reason, key in dropped[:4])
        result.problem(line, f"context not usable: {reasons}")
        return
    seen.add(number)
    result.entries.append(ListEntry(line, number, context))
