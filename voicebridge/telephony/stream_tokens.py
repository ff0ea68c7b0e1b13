"""Per-call stream tokens: the stream URL a webhook hands out carries one, checked on the upgrade and
spent once the WebSocket is accepted. Provider-neutral: every provider's incoming webhook issues them."""

from __future__ import annotations

import hashlib
import heapq
import hmac
import os
import re
import time

from voicebridge.telephony.auth import AuthFailure

STREAM_TOKEN_TTL_S = 300.0
# "<expiry in unix seconds>.<32 hex>": ASCII digits only ("²".isdigit() is true), a bounded length, and no
# leading zero: "0" + token would name the same expiry and MAC, i.e. the same token spelt anew.
STREAM_TOKEN = re.compile(r"([1-9][0-9]{0,11})\.([0-9a-f]{32})")
# Redeemed tokens are remembered until they expire; a flood of valid ones beyond this is refused.
MAX_REDEEMED_TOKENS = 100_000


class StreamTokens:
    """Short-lived per-call tokens in the stream URL the incoming webhook hands out: HMAC(sid, expiry)."""

    def __init__(
        self, secret: bytes | None = None, ttl_s: float = STREAM_TOKEN_TTL_S, audience: str = ""
    ) -> None:
        """`audience`: this node's id when nodes share the secret (`server.node_url`), so that a token
        issued for one node's socket opens no other node's: each node remembers only its own redeemed
        tokens, and one token must not open a stream on every node once."""
        # A random key per process when none is configured: a restart only voids unused URLs.
        self._secret = secret or os.urandom(32)
        self._ttl = ttl_s
        self.audience = audience
        # Single use: (call sid, expiry) -> expiry, and the same keys in expiry order for pruning. The MAC is
        # a function of exactly these two, so the key names the token however it is spelt.
        self._redeemed: dict[tuple[str, int], int] = {}
        self._expiries: list[tuple[int, tuple[str, int]]] = []

    def issue(self, call_sid: str, now: float | None = None, audience: str | None = None) -> str:
        """A token valid for `call_sid` for the next ttl seconds, on this node or on node `audience`."""
        expires = int((now if now is not None else time.time()) + self._ttl)
        return f"{expires}.{self._mac(call_sid, expires, self.audience if audience is None else audience)}"

    def check(self, call_sid: str, token: str, now: float | None = None) -> int:
        """Raise AuthFailure unless `token` was issued for `call_sid` and has not expired; its expiry."""
        parts = STREAM_TOKEN.fullmatch(token)
        if parts is None:
            raise AuthFailure("malformed stream token")
        expires = int(parts[1])
        if not hmac.compare_digest(parts[2].encode(), self._mac(call_sid, expires, self.audience).encode()):
            raise AuthFailure("stream token not for this call")
        if expires < (now if now is not None else time.time()):
            raise AuthFailure("stream token expired")
        return expires

    def check_unused(self, call_sid: str, token: str, now: float | None = None) -> int:
        """`check`, and refuse a token already redeemed (the upgrade's check; `redeem` spends it later)."""
        expires = self.check(call_sid, token, now)
        self._forget_expired(now if now is not None else time.time())
        if (call_sid, expires) in self._redeemed:
            raise AuthFailure("stream token already used")
        return expires

    def redeem(self, call_sid: str, token: str, now: float | None = None) -> None:
        """`check_unused`, and use the token up: one stream per issued URL. No await in here, so of two
        connections racing with one token exactly one redeems it."""
        expires = self.check_unused(call_sid, token, now)
        if len(self._redeemed) >= MAX_REDEEMED_TOKENS:
            raise AuthFailure("too many stream tokens in use", status=403)
        key = (call_sid, expires)
        self._redeemed[key] = expires
        heapq.heappush(self._expiries, (expires, key))

    def _forget_expired(self, moment: float) -> None:
        while self._expiries and self._expiries[0][0] < moment:
            _, old = heapq.heappop(self._expiries)
            self._redeemed.pop(old, None)

    @property
    def remembered(self) -> int:
        """Redeemed tokens still remembered (each until its expiry)."""
        return len(self._redeemed)

    def _mac(self, call_sid: str, expires: int, audience: str) -> str:
        message = (
            f"{call_sid}\n{expires}\n{audience}".encode() if audience else f"{call_sid}\n{expires}".encode()
        )
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]
