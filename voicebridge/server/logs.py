"""Logging: one line per record, whatever the logged values contain.

Values in log lines come from callers (numbers, sids, paths): control characters in them are escaped, so
a newline in a `From` cannot start a forged line, and an escape sequence cannot repaint a terminal.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from voicebridge.config.schema import LoggingConfig

# C0, DEL, C1, the Unicode line and paragraph separators, lone surrogates (undecodable bytes), and the
# backslash itself: escaped first, so a caller's literal "\n" reads "\\n", never like an escaped newline.
_CONTROL = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` with every control character written as a visible escape (\\n, \\x1b, \\u2028), and each
    backslash doubled."""
    return _CONTROL.sub(_escaped, text)


def _escape_lines(text: str) -> str:
    """A traceback escaped line by line: its own newlines stay, any other control character is escaped."""
    return "\n".join(escape_controls(line) for line in text.split("\n"))


def _safe_copy(record: logging.LogRecord) -> logging.LogRecord:
    """A copy with the message rendered and escaped (other handlers keep the original record)."""
    safe = logging.makeLogRecord(record.__dict__)
    safe.msg = escape_controls(record.getMessage())
    safe.args = None
    safe.call_sid = escape_controls(str(getattr(record, "call_sid", "-")))
    safe.exc_text = None  # another handler may have cached it unescaped
    return safe


class _CallSidDefault(logging.Filter):
    """Every record gets a call_sid, '-' outside a call, so one format serves all lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_sid"):
            record.call_sid = "-"
        return True


class TextFormatter(logging.Formatter):
    """The text format, values escaped; a traceback's own lines are indented, so none looks like a record."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(_safe_copy(record)).replace("\n", "\n  ")

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        # An exception's message comes from anywhere (a caller's field in a ValueError): CR, ESC and the
        # rest are escaped like any logged value; `format` indents the traceback's own lines.
        return _escape_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _escape_lines(super().formatStack(stack_info))


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        safe = _safe_copy(record)
        document = {
            "time": self.formatTime(safe),
            "level": safe.levelname,
            "logger": safe.name,
            "call_sid": safe.call_sid,
            "message": safe.msg,
        }
        if record.exc_info:
            document["error"] = self.formatException(record.exc_info)
        return json.dumps(document)


def configure_logging(config: LoggingConfig) -> None:
    """Log to stderr (journald picks it up), every line tagged with its call sid."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_CallSidDefault())
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s [%(call_sid)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class MalformedRequestLog(logging.Filter):
    """aiohttp logs a full ERROR traceback for every malformed request (over-long or too many headers,
    a bad request line, a body that is not its Content-Encoding when aiohttp itself reads the rest of it
    after the response): one small request could flood the log. Make each one counted line instead;
    real handler errors keep their traceback.

    It sits on the process-global "aiohttp.server" logger because that is where aiohttp's request handler
    logs, whichever app it serves. Two apps in one process (tests) each add one: the first rewrites the
    record and clears its exc_info, so the second finds nothing to count and a request is counted once."""

    def __init__(self, count: Callable[[], None]) -> None:
        super().__init__()
        self._count = count

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError | RequestPayloadError):
            self._count()
            record.msg, record.args = (
                "refused a malformed HTTP request: %s %.120s",
                (type(error).__name__, error.message if isinstance(error, HttpProcessingError) else error),
            )
            record.exc_info, record.exc_text = None, None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
