"""The control socket: newline-delimited JSON over a Unix socket, for `voicebridge calls` on the same box.

Each request is one line `{"version": 1, "op": "...", ...}` and gets one line back
`{"version": 1, "ok": true, "result": ...}` or `{"version": 1, "ok": false, "code": "...", "error": "..."}`.
The call operations are the registry's, the same ones the HTTP management API calls; the outbox_*
operations list, show and re-queue stored call records (`voicebridge outbox`); the campaign_* ones run
and steer outbound campaigns (`voicebridge campaign`).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voicebridge.admission.registry import CallRegistry, InvalidNumber, UnknownCall
from voicebridge.campaigns.service import Campaigns
from voicebridge.cluster.operations import CallOperations, LocalCallOperations
from voicebridge.cluster.routing import NodeUnreachable
from voicebridge.config.paths import private_dir_problem, private_runtime_fallback
from voicebridge.outbound.dialer import Dialer
from voicebridge.records.outbox import Outbox
from voicebridge.server.control_campaigns import CAMPAIGN_OPERATIONS, campaign_operation
from voicebridge.server.control_dial import dial_operation
from voicebridge.server.control_outbox import OUTBOX_OPERATIONS, outbox_operation
from voicebridge.server.control_protocol import (
    PROTOCOL_VERSION,
    RequestError,
    brief,
    parse_request,
    reply_id,
    string_param,
)
from voicebridge.server.metrics import Metrics
from voicebridge.telephony.sids import SID_RULE, is_valid_sid

# A request is a sid and a phone number; anything near this is not an operator typing.
MAX_REQUEST_BYTES = 64 * 1024
OPERATIONS = (
    "list",
    "show",
    "hangup",
    "transfer",
    "status",
    "dial",
    *OUTBOX_OPERATIONS,
    *CAMPAIGN_OPERATIONS,
)

logger = logging.getLogger("voicebridge.control")


class ControlSocketError(Exception):
    """The control socket cannot be served (another daemon owns it, or the path is unusable)."""


class ControlServer:
    """Serves the registry's operations on a 0600 Unix socket; removes the socket file on close."""

    def __init__(
        self,
        registry: CallRegistry,
        path: Path,
        status: Callable[[], dict[str, Any]],
        group: str = "",
        outbox: Outbox | None = None,
        metrics: Metrics | None = None,
        dialer: Dialer | None = None,
        campaigns: Campaigns | None = None,
        calls: CallOperations | None = None,
    ) -> None:
        """`calls`: the operations on live calls, routed to other nodes in a cluster; by default this
        node's registry's."""
        self._registry = registry
        self._calls: CallOperations = calls or LocalCallOperations(registry)
        self._dialer = dialer
        self._campaigns = campaigns
        self._metrics = metrics
        self._outbox = outbox
        self._path = path
        self._status = status
        self._group = group
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def path(self) -> Path:
        return self._path

    async def start(self) -> None:
        """Create the directory and socket (refusing if a live daemon already answers on it). The file
        system work and the probe of an old socket run off the loop: the probe may wait up to a second."""
        try:
            gid = await asyncio.to_thread(self._prepare)
            self._server = await asyncio.start_unix_server(
                self._serve_client, path=str(self._path), limit=MAX_REQUEST_BYTES
            )
            self._inode = await asyncio.to_thread(self._restrict, gid)
        except OSError as exc:
            raise ControlSocketError(f"control socket {self._path}: {exc.strerror or exc}") from None
        logger.info("control socket at %s", self._path)

    def _prepare(self) -> int | None:
        gid = self._group_id()
        fallback = private_runtime_fallback()
        if self._path.is_relative_to(fallback):
            if gid is not None:
                # The fallback directory is 0700 and stays so: no group member could reach a socket in it.
                raise ControlSocketError(
                    f"control.group needs control.socket_path or XDG_RUNTIME_DIR: the fallback {fallback} "
                    "is private to this user"
                )
            ensure_private_dir(fallback)
        self._path.parent.mkdir(mode=0o750 if gid is not None else 0o700, parents=True, exist_ok=True)
        self._remove_stale()
        return gid

    def _restrict(self, gid: int | None) -> int:
        """Operators only: the socket can end and transfer calls. Returns its inode."""
        if gid is not None:
            os.chown(self._path, -1, gid)
            os.chmod(self._path, 0o660)
        else:
            os.chmod(self._path, 0o600)
        return self._path.stat().st_ino

    async def close(self) -> None:
        """Stop serving and remove the socket file, if it is still the one we created."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        with contextlib.suppress(OSError):
            if self._path.stat().st_ino == self._inode:
                self._path.unlink()
        self._server = None

    def _group_id(self) -> int | None:
        if not self._group:
            return None
        try:
            return grp.getgrnam(self._group).gr_gid
        except KeyError:
            raise ControlSocketError(f"control.group {self._group!r} is not a group on this host") from None

    def _remove_stale(self) -> None:
        """A socket file left by a crashed daemon is removed; one a live daemon answers on is not."""
        try:
            mode = self._path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlSocketError(f"control socket {self._path} exists and is not a socket; remove it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self._path))
        except ConnectionRefusedError:
            # Only a socket file nothing listens on refuses: that one a crashed daemon left behind.
            logger.info("removing stale control socket %s", self._path)
            self._path.unlink(missing_ok=True)
            return
        except OSError:
            # EAGAIN (a live daemon whose accept backlog is full answers it at once), a timeout, or no
            # permission: something may listen there, and removing a live daemon's socket hides it.
            pass
        finally:
            probe.close()
        raise ControlSocketError(
            f"another voicebridge answers on {self._path}; stop it or set control.socket_path"
        )

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as end:  # the last line may lack its newline
                    line = end.partial
                except asyncio.LimitOverrunError as overrun:
                    # The whole over-long line is read and dropped, so the next one is read cleanly; a
                    # last line without its newline gets its answer too.
                    more = await _skip_line(reader, overrun.consumed)
                    await self._send(writer, self._failure(None, "too_large", "request line too long"))
                    if not more:
                        break
                    continue
                if not line:
                    break
                await self._send(writer, await self._respond(line))
        except (OSError, asyncio.CancelledError):  # the client went away
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _send(self, writer: asyncio.StreamWriter, response: dict[str, Any]) -> None:
        if not response["ok"]:
            self._count_refusal(response)
        try:
            encoded = json.dumps(response, allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:  # a result that is not JSON is our bug
            logger.error("control reply not encodable: %s", type(exc).__name__)
            failure = self._failure(response.get("id"), "internal_error", "the daemon's answer was not JSON")
            encoded = json.dumps(failure).encode()
        writer.write(encoded + b"\n")
        await writer.drain()

    async def _respond(self, line: bytes) -> dict[str, Any]:
        """Exactly one reply for any line: whatever the bytes hold, nothing escapes to the loop."""
        request_id = None
        try:
            request = parse_request(line)
            request_id = reply_id(request.get("id"))
            version = request.get("version")
            # `true == 1` and `1.0 == 1` in Python: only the integer 1 is version 1.
            if type(version) is not int or version != PROTOCOL_VERSION:
                raise RequestError(
                    "bad_version", f"unsupported version {brief(version)}; this daemon speaks 1"
                )
            result = await self._dispatch(request)
        except RequestError as exc:
            return self._failure(request_id, exc.code, str(exc))
        except UnknownCall as exc:
            return self._failure(request_id, "unknown_call", f"no live call {str(exc.args[0])[:100]}")
        except InvalidNumber as exc:
            return self._failure(request_id, "bad_number", str(exc)[:200])
        except NodeUnreachable as exc:
            return self._failure(request_id, "node_unreachable", str(exc)[:200])
        except Exception as exc:  # a bug in an operation must cost one reply, not the connection
            logger.error("control request failed: %s", type(exc).__name__)
            return self._failure(request_id, "internal_error", f"the daemon failed: {type(exc).__name__}")
        response: dict[str, Any] = {"version": PROTOCOL_VERSION, "ok": True, "result": result}
        if request_id is not None:
            response["id"] = request_id
        return response

    async def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        calls = self._calls
        if op == "list":
            everywhere = request.get("cluster", False)
            if not isinstance(everywhere, bool):
                raise RequestError("bad_request", "cluster must be true or false")
            return await calls.list_calls(everywhere)
        if op == "status":
            return self._status()
        if op not in OPERATIONS:
            raise RequestError("unknown_op", f"unknown op {brief(op)}; one of {', '.join(OPERATIONS)}")
        if op in OUTBOX_OPERATIONS:
            return await outbox_operation(self._outbox, op, request)
        if op == "dial":
            return await dial_operation(self._dialer, request)
        if op in CAMPAIGN_OPERATIONS:
            return await campaign_operation(self._campaigns, op, request)
        call_sid = string_param(request, "call_sid")
        if not is_valid_sid(call_sid):
            raise RequestError("bad_call_sid", f"call_sid must be {SID_RULE}")
        if op == "show":
            return await calls.show(call_sid)
        if op == "hangup":
            await calls.hangup(call_sid)
            logger.info("hangup requested over the control socket", extra={"call_sid": call_sid})
            return {"call_sid": call_sid, "action": "hangup"}
        number = string_param(request, "number")
        await calls.transfer(call_sid, number)
        logger.info("transfer requested over the control socket", extra={"call_sid": call_sid})
        return {"call_sid": call_sid, "action": "transfer", "number": number}

    def _count_refusal(self, response: dict[str, Any]) -> None:
        """One counted line per refused request; codes are ours, messages quote values with repr()."""
        code = str(response["code"])
        if self._metrics is not None:
            self._metrics.control_refusals.labels(code=code).inc()
        message = str(response["error"])[:200].encode("unicode_escape").decode("ascii")
        logger.warning("control request refused: %s (%s)", code, message)

    @staticmethod
    def _failure(request_id: Any, code: str, message: str) -> dict[str, Any]:
        response: dict[str, Any] = {"version": PROTOCOL_VERSION, "ok": False, "code": code, "error": message}
        if request_id is not None:
            response["id"] = request_id
        return response


async def _skip_line(reader: asyncio.StreamReader, consumed: int) -> bool:
    """Drop bytes through the next newline (`consumed` of them known to precede it); False at the end."""
    try:
        while True:
            await reader.readexactly(consumed)
            try:
                await reader.readuntil(b"\n")
                return True
            except asyncio.LimitOverrunError as overrun:
                consumed = overrun.consumed
    except asyncio.IncompleteReadError:
        return False


def ensure_private_dir(path: Path) -> None:
    """Create `path` 0700, or accept it only if it is a real directory of ours that no one else can write:
    in a shared temp dir another local user could have made it first, to hold or swap our socket."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ControlSocketError(f"control socket directory {path}: {exc.strerror or exc}") from None
    if problem := private_dir_problem(path):
        raise ControlSocketError(
            f"control socket directory {path} {problem}; refusing it (someone else could control the "
            "socket): remove it, or set control.socket_path or XDG_RUNTIME_DIR"
        )
