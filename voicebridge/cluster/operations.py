"""The operator's actions on live calls, as the control socket and the management API run them: on this
node's registry, and, with `[cluster] redis_url`, on whichever node holds the call.

A call is looked for here first (no round trip for the common case); otherwise the node whose last
heartbeat lists it is asked over pub/sub (cluster/routing.py). `calls list --cluster` asks every live
node and says which did not answer, rather than showing a partial list as if it were whole.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from voicebridge.admission.registry import CallRegistry, UnknownCall
from voicebridge.cluster.nodes import NodeDirectory
from voicebridge.cluster.outage import UNREACHABLE
from voicebridge.cluster.routing import CallRouter, NodeUnreachable


class CallOperations(Protocol):
    """List, show, hang up and transfer live calls."""

    async def list_calls(self, everywhere: bool = False) -> dict[str, Any]:
        """{"calls": [...]}: this node's calls, or with `everywhere` every node's (each row naming its
        node, and "nodes": each node's "ok" or why it did not answer)."""
        ...

    async def show(self, call_sid: str) -> dict[str, Any]:
        """One call, live or recently finished (raises UnknownCall)."""
        ...

    async def hangup(self, call_sid: str) -> None:
        """End a live call (raises UnknownCall)."""
        ...

    async def transfer(self, call_sid: str, number: str) -> None:
        """Hand a live call to a human at `number` (raises UnknownCall, InvalidNumber)."""
        ...


class LocalCallOperations:
    """One node: the registry's own operations."""

    def __init__(self, registry: CallRegistry) -> None:
        self._registry = registry

    async def list_calls(self, everywhere: bool = False) -> dict[str, Any]:
        return {"calls": self._registry.list_active()}

    async def show(self, call_sid: str) -> dict[str, Any]:
        return self._registry.show(call_sid)

    async def hangup(self, call_sid: str) -> None:
        await self._registry.hangup(call_sid)

    async def transfer(self, call_sid: str, number: str) -> None:
        await self._registry.transfer(call_sid, number)


class ClusterCallOperations:
    """This node's registry first, then the node that holds the call."""

    def __init__(self, registry: CallRegistry, directory: NodeDirectory, router: CallRouter) -> None:
        self._registry = registry
        self._local = LocalCallOperations(registry)
        self._directory = directory
        self._router = router

    async def _owner(self, call_sid: str) -> str:
        """The other node whose heartbeat lists this live call; UnknownCall when none does."""
        try:
            nodes = await self._directory.nodes()
        except UNREACHABLE:
            raise NodeUnreachable("shared state unreachable: other nodes' calls cannot be found") from None
        for node in nodes:
            if node.node_id != self._directory.node_id and call_sid in node.calls:
                return node.node_id
        raise UnknownCall(call_sid)

    def _here(self, call_sid: str) -> bool:
        return call_sid in self._registry.active_sids()

    async def list_calls(self, everywhere: bool = False) -> dict[str, Any]:
        me = self._directory.node_id
        if not everywhere:
            return await self._local.list_calls()
        try:
            others = [node.node_id for node in await self._directory.nodes() if node.node_id != me]
        except UNREACHABLE:
            raise NodeUnreachable("shared state unreachable: other nodes cannot be listed") from None
        answers = await asyncio.gather(
            *(self._router.ask(node, "list") for node in others), return_exceptions=True
        )
        calls = [call | {"node_id": me} for call in self._registry.list_active()]
        nodes = {me: "ok"}
        for node, answer in zip(others, answers, strict=True):
            if isinstance(answer, NodeUnreachable):
                nodes[node] = str(answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                nodes[node] = "ok"
                calls += [call | {"node_id": node} for call in answer if isinstance(call, dict)]
        return {"calls": calls, "nodes": nodes}

    async def show(self, call_sid: str) -> dict[str, Any]:
        try:
            return self._registry.show(call_sid)
        except UnknownCall:
            owner = await self._owner(call_sid)
        shown = await self._router.ask(owner, "show", call_sid)
        return (shown if isinstance(shown, dict) else {}) | {"node_id": owner}

    async def hangup(self, call_sid: str) -> None:
        if self._here(call_sid):
            await self._registry.hangup(call_sid)
            return
        await self._router.ask(await self._owner(call_sid), "hangup", call_sid)

    async def transfer(self, call_sid: str, number: str) -> None:
        if self._here(call_sid):
            await self._registry.transfer(call_sid, number)
            return
        await self._router.ask(await self._owner(call_sid), "transfer", call_sid, number)
