"""The collector's side of symbol ownership and of the command stream (layout:
:mod:`feed.io.bus`).

Ownership: each symbol is published by one collector, named by ``P:owner:S`` (``SET NX``
with a TTL of ``HEARTBEAT_TTL_S``, renewed by the collector's heartbeat); a collector
that dies stops renewing and the key expires. :func:`claim_symbol` refuses a symbol
another live collector owns (:class:`OwnershipError`); :func:`release_symbol` deletes the
key only while it still names the caller.

Commands: :class:`CommandConsumer` tails ``P:commands`` (subscribe / unsubscribe asked
from a dashboard) on a thread of its own.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from feed.io.bus import HEARTBEAT_TTL_S, Keys, decode_command

__all__ = ["OwnershipError", "claim_symbol", "release_symbol", "CommandConsumer", "OWNER_TTL_MS",
           "RENEW_SCRIPT", "RELEASE_SCRIPT", "BACKOFF_MAX_S"]

log = logging.getLogger("tickscope.redis")

#: TTL of an owner key, ms: a collector silent this long loses its symbols.
OWNER_TTL_MS = int(HEARTBEAT_TTL_S * 1000)
#: Longest wait between retries against an unreachable Redis, seconds.
BACKOFF_MAX_S = 2.0

# Renew the owner key when it is still ours, claim it when it is gone (a Redis restarted
# empty, an expiry during a pause); return the owner afterwards.
RENEW_SCRIPT = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return ARGV[1] end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return ARGV[1] end
return v
"""
# Delete the owner key only while it is still ours.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class OwnershipError(Exception):
    """A symbol is owned by another live collector (``symbol``, ``owner``)."""

    def __init__(self, symbol: str, owner: str) -> None:
        super().__init__(f"{symbol} is owned by the live collector {owner!r}")
        self.symbol = symbol
        self.owner = owner


def claim_symbol(client: Any, keys: Keys, symbol: str, name: str) -> None:
    """Claim ``symbol`` for collector ``name`` (``SET P:owner:S NAME NX PX ttl``); a key
    already holding ``name`` is renewed.

    Raises
    ------
    OwnershipError
        If another collector owns it (its key has not expired).
    redis.RedisError
        If Redis cannot be reached.
    """
    owner = client.eval(RENEW_SCRIPT, 1, keys.owner(symbol), name, OWNER_TTL_MS)
    owner = owner.decode("utf-8", "replace") if isinstance(owner, bytes) else str(owner)
    if owner != name:
        raise OwnershipError(symbol, owner)


def release_symbol(client: Any, keys: Keys, symbol: str, name: str) -> None:
    """Delete ``P:owner:S`` if it still names ``name``."""
    client.eval(RELEASE_SCRIPT, 1, keys.owner(symbol), name)


class CommandConsumer:
    """Reads ``P:commands`` from the moment it starts; subscribes and unsubscribes symbols.

    ``subscribe``: taken when the entry names this collector or none, the adapter accepts
    the symbol and the owner key can be claimed; ``unsubscribe``: taken by the owner, which
    releases the key. Entries that do not decode (missing fields, a 10 MB symbol, an
    unknown op) and symbols the vendor refuses are counted (``bad``, ``refused``) and skipped.

    ``serves``, when given, tells whether this collector's source can deliver a symbol (a
    replay holds only the symbols recorded): a symbol it cannot is left to another
    collector, never claimed.
    """

    def __init__(self, engine: Any, client: Any, name: str, keys: Keys,
                 serves: Callable[[str], bool] | None = None) -> None:
        self.engine = engine
        self.serves = serves
        self.client = client
        self.name = name
        self.keys = keys
        self.bad = 0
        self.refused = 0
        self.taken = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cursor = "$"

    def start(self) -> "CommandConsumer":
        """Note the stream's last id (commands from now on count) and start the thread."""
        try:
            last = self.client.xrevrange(self.keys.commands, count=1)
            self._cursor = last[0][0] if last else "0-0"
        except Exception as exc:
            log.warning("cannot read %s yet: %s", self.keys.commands, exc)
        self._thread = threading.Thread(target=self._run, name="tickscope-commands", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def stats(self) -> dict:
        """``{"taken", "bad", "refused", "errors"}``: commands carried out, skipped as
        malformed, refused (symbol, ownership), failed reads."""
        return {"taken": self.taken, "bad": self.bad, "refused": self.refused, "errors": self.errors}

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                reply = self.client.xread({self.keys.commands: self._cursor}, count=100, block=500)
            except Exception as exc:
                self.errors += 1
                log.debug("reading commands failed: %s", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = 0.1
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    self._cursor = entry_id
                    self.handle(fields)

    def handle(self, fields: dict) -> None:
        """Carry out one command entry (see the class docstring); never raises."""
        try:
            op, text, target = decode_command(fields)
        except Exception:
            self.bad += 1
            log.warning("skipped a malformed command entry (%d so far)", self.bad)
            return
        if target and target != self.name:
            return
        try:
            symbol = self.engine.normalize_symbol(text)
        except ValueError as exc:
            self.refused += 1
            log.info("command %s %r refused: %s", op, text[:64], exc)
            return
        try:
            if op == "subscribe":
                self._subscribe(symbol)
            elif symbol in self.engine.symbols():
                self.engine.unsubscribe(symbol)
                release_symbol(self.client, self.keys, symbol, self.name)
                self.taken += 1
                log.info("unsubscribed %s (command)", symbol)
        except Exception as exc:
            self.errors += 1
            log.warning("command %s %s failed: %s", op, symbol, exc)

    def _subscribe(self, symbol: str) -> None:
        if symbol in self.engine.symbols():
            return
        try:
            self.engine.adapter.validate_subscription([*self.engine.symbols(), symbol])
            if self.serves is not None and not self.serves(symbol):
                raise ValueError("this collector's source does not serve it")
        except ValueError as exc:
            self.refused += 1
            log.info("not subscribing %s: %s", symbol, exc)
            return
        try:
            claim_symbol(self.client, self.keys, symbol, self.name)
        except OwnershipError as exc:
            log.info("not subscribing %s: %s", symbol, exc)
            return
        try:
            self.engine.subscribe(symbol)
        except ValueError as exc:
            self.refused += 1
            release_symbol(self.client, self.keys, symbol, self.name)
            log.info("not subscribing %s: %s", symbol, exc)
            return
        self.taken += 1
        log.info("subscribed %s (command)", symbol)
