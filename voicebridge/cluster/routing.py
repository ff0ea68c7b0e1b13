"""Operator actions on a call another node holds, over Redis pub/sub: `calls hangup SID` typed on node 1
ends the call node 3 holds.

Every node subscribes to two channels: its requests (`{prefix}:ops:{node_id}`) and the answers to its
own requests (`{prefix}:replies:{node_id}`). A request names its id and the asking node; the owner runs
it on its own registry (the same operations its control socket runs) and publishes the answer to the
asker. A PUBLISH that reaches no subscriber means the node is not listening: the asker hears that at
once rather than after a timeout. Messages are read as untrusted: whoever can write to Redis can send
anything, so only the documented shapes are acted on; anything else is counted and logged on one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from voicebridge.admission.registry import CallRegistry, InvalidNumber, UnknownCall
from voicebridge.cluster.keys import ClusterKeys
from voicebridge.cluster.outage import UNREACHABLE, Outage
from voicebridge.telephony.sids import is_valid_sid

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("voicebridge.cluster")

ROUTED_OPERATIONS = ("list", "show", "hangup", "transfer")
# A hangup on the owner is a stream closed, a transfer one provider request (5 s at most): both fit.
ANSWER_WITHIN_S = 8.0
MAX_MESSAGE_BYTES = 64 * 1024
# Requests being answered at once; beyond this (no operator types that fast) the rest are refused.
MAX_HANDLING = 64
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
RECONNECT_S = 1.0


class NodeUnreachable(Exception):
    """The node holding a call did not take or answer a routed request."""


class CallRouter:
    """This node's side of routed operator actions: it asks other nodes, and answers them."""

    def __init__(
        self,
        redis: Redis,
        keys: ClusterKeys,
        node_id: str,
        registry: CallRegistry,
        on_unreachable: Callable[[], None],
        on_refused: Callable[[str], None],
    ) -> None:
        """`redis` must have no socket timeout: the subscription waits on its connection indefinitely.
        `on_refused(reason)` counts a message that was not acted on."""
        self._redis = redis
        self._keys = keys
        self.node_id = node_id
        self._registry = registry
        self._on_refused = on_refused
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._handling: set[asyncio.Task[None]] = set()
        self._outage = Outage(
            "operator actions not routed to other nodes", "operator actions routed", on_unreachable
        )
        self.listening = asyncio.Event()

    # --- asking ----------------------------------------------------------------------------------

    async def ask(self, node_id: str, op: str, call_sid: str = "", number: str = "") -> Any:
        """Run `op` on node `node_id`; its result. Raises UnknownCall or InvalidNumber as a local
        operation would, NodeUnreachable when the node does not answer."""
        request_id = secrets.token_hex(16)
        answer = self._waiting[request_id] = asyncio.get_running_loop().create_future()
        message = {"id": request_id, "from": self.node_id, "op": op, "call_sid": call_sid, "number": number}
        try:
            try:
                heard_by = await self._redis.publish(self._keys.operations(node_id), json.dumps(message))
            except UNREACHABLE as exc:
                self._outage.failed(exc)
                raise NodeUnreachable("shared state unreachable") from None
            if not heard_by:
                raise NodeUnreachable(f"node {node_id} is not listening")
            try:
                async with asyncio.timeout(ANSWER_WITHIN_S):
                    reply = await answer
            except TimeoutError:
                raise NodeUnreachable(f"node {node_id} did not answer in {ANSWER_WITHIN_S:.0f} s") from None
        finally:
            self._waiting.pop(request_id, None)
        if reply.get("ok") is True:
            return reply.get("result")
        code, error = str(reply.get("code", ""))[:40], str(reply.get("error", ""))[:200]
        if code == "unknown_call":
            raise UnknownCall(call_sid)
        if code == "bad_number":
            raise InvalidNumber(error)
        raise NodeUnreachable(f"node {node_id} failed: {code or 'no reason'}")

    # --- answering -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Listen on this node's two channels until cancelled; a lost connection is retried every second."""
        channels = (self._keys.operations(self.node_id), self._keys.replies(self.node_id))
        try:
            while True:
                try:
                    async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                        await pubsub.subscribe(*channels)
                        self._outage.succeeded()
                        self.listening.set()
                        async for message in pubsub.listen():
                            self._dispatch(message)
                except UNREACHABLE as exc:
                    self.listening.clear()
                    self._outage.failed(exc)
                await asyncio.sleep(RECONNECT_S)
        finally:
            for task in list(self._handling):
                task.cancel()
            await asyncio.gather(*self._handling, return_exceptions=True)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        channel, data = _text(message.get("channel")), message.get("data")
        doc = _document(data)
        if doc is None:
            return self._refuse("not a JSON object")
        if channel == self._keys.replies(self.node_id):
            request_id = doc.get("id")
            answer = self._waiting.get(request_id) if isinstance(request_id, str) else None
            if answer is not None and not answer.done():
                answer.set_result(doc)
            return None
        if len(self._handling) >= MAX_HANDLING:
            return self._refuse("too many requests at once")
        task = asyncio.create_task(self._answer(doc))
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)
        return None

    async def _answer(self, doc: dict[str, Any]) -> None:
        request_id, asker, op = doc.get("id"), doc.get("from"), doc.get("op")
        call_sid, number = doc.get("call_sid", ""), doc.get("number", "")
        if not (isinstance(request_id, str) and _REQUEST_ID.fullmatch(request_id)):
            return self._refuse("bad request id")
        if not (isinstance(asker, str) and _NODE_ID.fullmatch(asker)):
            return self._refuse("bad asking node")
        if op not in ROUTED_OPERATIONS or not isinstance(call_sid, str) or not isinstance(number, str):
            return self._refuse("bad operation")
        if op != "list" and not is_valid_sid(call_sid):
            return self._refuse("bad call sid")
        reply: dict[str, Any] = {"id": request_id}
        try:
            reply |= {"ok": True, "result": await self._run(op, call_sid, number[:64])}
        except UnknownCall:
            reply |= {"ok": False, "code": "unknown_call", "error": "no live call"}
        except InvalidNumber as exc:
            reply |= {"ok": False, "code": "bad_number", "error": str(exc)[:200]}
        except Exception as exc:  # a bug in an operation costs one answer, not the listener
            logger.error("routed %s failed: %s", op, type(exc).__name__, extra={"call_sid": call_sid or "-"})
            reply |= {"ok": False, "code": "internal_error", "error": type(exc).__name__}
        if op in ("hangup", "transfer"):
            logger.info("%s requested by node %s", op, asker, extra={"call_sid": call_sid})
        with contextlib.suppress(*UNREACHABLE):
            await self._redis.publish(self._keys.replies(asker), json.dumps(reply))
        return None

    async def _run(self, op: str, call_sid: str, number: str) -> Any:
        """The operation on this node's registry, as the control socket runs it."""
        registry = self._registry
        if op == "list":
            return registry.list_active()
        if op == "show":
            return registry.show(call_sid)
        if op == "hangup":
            await registry.hangup(call_sid)
            return {"call_sid": call_sid, "action": "hangup"}
        await registry.transfer(call_sid, number)
        return {"call_sid": call_sid, "action": "transfer", "number": number}

    def _refuse(self, reason: str) -> None:
        self._on_refused(reason)
        logger.warning("cluster message refused: %s", reason)


def _document(data: Any) -> dict[str, Any] | None:
    if not isinstance(data, bytes | str) or len(data) > MAX_MESSAGE_BYTES:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
