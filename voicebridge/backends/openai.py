"""An OpenAI-compatible chat-completions server as the backend (`backend.kind = "openai"`).

`backend.url` is the API base (e.g. https://api.openai.com/v1); replies are streamed over server-sent
events so speech can start on the first sentence.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from voicebridge.backends.base import BackendError, CallInfo, ConversationTurn, ReplyAction
from voicebridge.backends.http import HttpBackend
from voicebridge.backends.placeholders import fill_placeholders
from voicebridge.config.schema import BackendConfig

PATH = "/chat/completions"
ROLES = {"caller": "user", "bot": "assistant"}


def auth_headers(config: BackendConfig) -> dict[str, str]:
    """OpenAI's bearer auth, in place of the contract's X-Api-Key (none for a keyless local server)."""
    key = config.api_key.get_secret_value()
    return {"Authorization": f"Bearer {key}"} if key else {}


def _content(chunk: Any, field: str) -> tuple[str, bool]:
    """The text of `choices[0].<field>.content` and whether the choice says it is finished."""
    if not isinstance(chunk, dict):
        raise BackendError(f"backend POST {PATH}: event is not a JSON object")
    if "error" in chunk:  # its message may quote the key back, so it is not repeated
        raise BackendError(f"backend POST {PATH}: the server reported an error mid-stream")
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "", False  # e.g. a usage-only chunk
    part = choices[0].get(field)
    text = part.get("content") if isinstance(part, dict) else None
    return (text if isinstance(text, str) else ""), choices[0].get("finish_reason") is not None


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The data of each server-sent event; other fields (event:, id:) and comments carry nothing for us."""
    data: list[str] = []
    async for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            # A blank line ends an event; its data lines join with newlines (SSE's rule).
            yield "\n".join(data)
            data = []
    if data:
        yield "\n".join(data)


class OpenAIBackend(HttpBackend):
    """Streams chat completions: the system prompt, the conversation so far, and the caller's words."""

    name = "openai"
    # A completion has no side effects, so a speculative request thrown away when the caller resumes
    # speaking only costs its tokens (the stream is closed at once, so generation stops early); starting
    # during the caller's pause saves the end-of-turn wait on every turn, which a phone caller hears.
    speculative_safe = True

    def _body(self, call: CallInfo, text: str, history: list[ConversationTurn]) -> dict[str, Any]:
        # The called business's prompt (its settings or its [numbers] table) over backend.system_prompt;
        # `{placeholders}` in it take the call's context (backends/placeholders.py).
        prompt = fill_placeholders(call.system_prompt or self._config.system_prompt, call.context)
        messages = [{"role": "system", "content": prompt}] if prompt else []
        # A bot line cut off before any of it was heard is empty; some servers refuse empty messages.
        messages += [{"role": ROLES[turn.role], "content": turn.text} for turn in history if turn.text]
        messages.append({"role": "user", "content": text})
        return {"model": self._config.model, "stream": True, "messages": messages}

    async def reply(
        self, call: CallInfo, text: str, history: list[ConversationTurn]
    ) -> AsyncIterator[str | ReplyAction]:
        """Yield the completion's content pieces as they stream in."""
        async with aclosing(self._complete(self._body(call, text, history))) as pieces:
            async for piece in pieces:
                yield piece

    async def digits(
        self, call: CallInfo, digits: str, history: list[ConversationTurn]
    ) -> AsyncIterator[str | ReplyAction]:
        """Tell the model which keys were pressed, as a user message."""
        text = f"The caller pressed the keys: {' '.join(digits)}"
        async with aclosing(self._complete(self._body(call, text, history))) as pieces:
            async for piece in pieces:
                yield piece

    async def _complete(self, body: dict[str, Any]) -> AsyncIterator[str]:
        async with self._http.open_stream(PATH, body, accept="text/event-stream") as response:
            if response.content_type == "application/json":  # a server that ignores "stream"
                text, _ = _content(await self._http.read_json(response, PATH), "message")
                if text:
                    yield text
                return
            finished = False
            async with (
                aclosing(self._http.read_lines(response, PATH)) as lines,
                aclosing(_events(lines)) as events,
            ):
                async for payload in events:
                    if payload == "[DONE]":
                        return
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        raise BackendError(f"backend POST {PATH}: event is not JSON") from None
                    text, finished = _content(chunk, "delta")
                    if text:
                        yield text
            if not finished:
                raise BackendError(f"backend POST {PATH}: stream ended before the completion did")
