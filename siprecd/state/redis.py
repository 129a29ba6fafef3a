"""The shared store: Redis (txredisapi, reconnecting) over the local one.

Every write goes to the local SQLite store first, synchronously: a node keeps what it needs to
resume its own calls whatever Redis does.  Redis gets the same records asynchronously, for the
other nodes (a takeover with Replaces after this node died).  While Redis is unreachable the
store is *degraded* (``/ready`` and ``siprecd_state_store_degraded`` say so), new calls go on
with local state, and what changed is kept in a dirty set; when the connection is back, every
live session is written again (resync), so nothing is lost either way.

Keys (``siprecd:`` prefix): ``session:<id>`` the record, ``positions:<id>`` the periodic file
positions, ``dialog:<call-id>|<our tag>|<their tag>`` -> session id, ``owner:<id>`` -> node id
with a lease (``[state] lease`` seconds, renewed every third of it by the heartbeat), and
``node:<node id>`` the node's own lease.  A session whose owner key has expired belongs to a
dead node: another node may take it over.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from siprecd.config import StateConfig
from siprecd.errors import ServiceUnavailable
from siprecd.state.local import LocalStore

if TYPE_CHECKING:
    from siprecd.metrics import Metrics

log = Logger()

PREFIX = "siprecd:"


def dialog_key(call_id: str, local_tag: str, remote_tag: str) -> str:
    return f"{PREFIX}dialog:{call_id}|{local_tag}|{remote_tag}"


# Take or renew a session's ownership unless another node holds it: 1, or the other owner.
CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner == false or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return owner
"""


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class RedisStore(Service):
    shared = True

    def __init__(
        self, reactor: Any, config: StateConfig, local: LocalStore, node_id: str, *, metrics: Metrics | None = None
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.local = local
        self.node_id = node_id
        self.url = config.redis_url
        self.redis: Any = None
        self.connected = False
        self.counters = {"resyncs": 0, "errors": 0, "writes": 0}
        self._records: dict[str, dict[str, Any]] = {}  # live sessions: what Redis must hold
        self._positions: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        self._dirty_positions: set[str] = set()
        self._deleted: dict[str, dict[str, Any]] = {}  # id -> its last record (for the keys)
        self._flushing = False
        self._heartbeat: LoopingCall | None = None
        self._lost: set[str] = set()
        self._stale_dialogs: set[str] = set()  # dialog keys of replaced dialogs, to delete
        # Called with (session id, owner) when another node has taken a session of this one
        # over (while this node was down or cut off from Redis): it must stop recording it here.
        self.on_lost: Callable[[str, str], None] | None = None
        if metrics is not None:
            metrics.watch_state(self)

    # --- service ----------------------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802
        import txredisapi

        super().startService()
        # Sessions left by the last run: Redis gets them again as soon as it is reachable.
        for session_id, record in self.local.load_all().items():
            positions = record.pop("positions", {})
            self._records[session_id] = record
            self._positions[session_id] = positions
        parsed = urlparse(self.url)
        dbid = int(parsed.path.strip("/") or 0) if parsed.scheme == "redis" else None
        if parsed.scheme == "unix":
            self.redis = txredisapi.lazyUnixConnection(parsed.path, dbid=dbid, reconnect=True)
        else:
            self.redis = txredisapi.lazyConnection(
                parsed.hostname or "127.0.0.1",
                parsed.port or 6379,
                dbid=dbid,
                reconnect=True,
                password=parsed.password,
                connectTimeout=self.config.connect_timeout,
                replyTimeout=self.config.command_timeout,
            )
        self._heartbeat = LoopingCall(self.beat)
        self._heartbeat.clock = self.reactor
        self._heartbeat.start(self.config.lease / 3, now=True)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self._heartbeat = None
        redis, self.redis = self.redis, None
        self.local.close()
        if redis is None:
            return succeed(None)
        return redis.disconnect().addErrback(lambda _: None)

    def _pool_up(self) -> bool:
        factory = getattr(self.redis, "_factory", None)
        return bool(factory is not None and factory.pool)

    # --- StateStore -------------------------------------------------------------------------

    def put(self, session_id: str, record: dict[str, Any]) -> None:
        self.local.put(session_id, record)
        self._records[session_id] = record
        self._deleted.pop(session_id, None)
        self._dirty.add(session_id)
        self._flush()

    def positions(self, session_id: str, positions: dict[str, Any]) -> None:
        self.local.positions(session_id, positions)
        self._positions[session_id] = positions
        self._dirty_positions.add(session_id)
        self._flush()

    def delete(self, session_id: str) -> None:
        self.local.delete(session_id)
        record = self._records.pop(session_id, None)
        self._positions.pop(session_id, None)
        self._dirty.discard(session_id)
        self._dirty_positions.discard(session_id)
        if record is not None and session_id not in self._lost:
            # (A session another node took over is not deleted from Redis: it is theirs now.)
            self._deleted[session_id] = record
        self._lost.discard(session_id)
        self._flush()

    def load_all(self) -> dict[str, dict[str, Any]]:
        return self.local.load_all()

    def problem(self) -> str | None:
        return self.local.problem()

    def shared_problem(self) -> str | None:
        """Readiness, not critical: without Redis the node works on, with local state only."""
        if not self.connected:
            pending = len(self._dirty - {"\0leases"}) + len(self._deleted)
            return (
                f"degraded: Redis at {self.url} is unreachable; state is kept locally "
                f"({pending} change(s) to write when it is back)"
            )
        return None

    @property
    def degraded(self) -> bool:
        return not self.connected

    # --- cluster ----------------------------------------------------------------------------

    def forget_dialog(self, key: tuple[str, str, str]) -> None:
        """A dialog was replaced (RFC 3891): its index entry goes (the session has a new one)."""
        self._stale_dialogs.add(dialog_key(*key))
        self._flush()

    def find_dialog(self, key: tuple[str, str, str]) -> Deferred[tuple[dict[str, Any] | None, bool]]:
        """The record of the session on dialog ``key`` and whether its owner is alive."""
        if not self.connected and self._pool_up():
            self.beat()  # connected since the last heartbeat
        if not self.connected:
            raise ServiceUnavailable(
                f"the shared state store (Redis at {self.url}) is unreachable: cannot look up the "
                "dialog to replace", retry_after=5,
            )
        return Deferred.fromCoroutine(self._find(key))

    async def _find(self, key: tuple[str, str, str]) -> tuple[dict[str, Any] | None, bool]:
        session_id = await self.redis.get(dialog_key(*key))
        if not session_id:
            return None, False
        raw = await self.redis.get(f"{PREFIX}session:{session_id}")
        if not raw:
            return None, False
        record = json.loads(raw)
        positions = await self.redis.get(f"{PREFIX}positions:{session_id}")
        record["positions"] = json.loads(positions) if positions else {}
        owner = await self.redis.get(f"{PREFIX}owner:{session_id}")
        if owner:
            record["node"] = owner
        return record, bool(owner)

    # --- writing to Redis -------------------------------------------------------------------

    def beat(self) -> None:
        """The heartbeat: notice the connection coming and going, renew the leases, flush."""
        try:
            up = self._pool_up()
            if up and not self.connected:
                self.connected = True
                self.counters["resyncs"] += 1
                # Back (or first connection): every live session is written again.
                self._dirty |= set(self._records)
                self._dirty_positions |= set(self._positions)
                log.info("state store: Redis at {url} reachable, writing {count} session(s)", url=self.url, count=len(self._records))
            elif not up and self.connected:
                self._degrade("connection lost")
            if self.connected:
                self._dirty.add("\0leases")
            self._flush()
        except Exception:
            log.failure("state store heartbeat")

    def _degrade(self, why: str) -> None:
        if self.connected:
            log.warn("state store degraded: Redis at {url}: {why}; keeping state locally", url=self.url, why=why)
        self.connected = False

    def _flush(self) -> None:
        if self._flushing or not self.connected or not (
            self._dirty or self._dirty_positions or self._deleted or self._stale_dialogs
        ):
            return
        self._flushing = True
        d = self._write_all()

        def done(_: object) -> None:
            self._flushing = False

        def failed(failure: Any) -> None:
            self._flushing = False
            self.counters["errors"] += 1
            self._degrade(f"{failure.type.__name__}: {failure.getErrorMessage()}")

        d.addCallbacks(done, failed)

    @inlineCallbacks
    def _write_all(self) -> Any:
        lease = int(self.config.lease * 1000)
        redis = self.redis
        while self._dirty or self._dirty_positions or self._deleted or self._stale_dialogs:
            if self._stale_dialogs:
                stale = self._stale_dialogs.pop()
                try:
                    yield redis.delete([stale])
                except BaseException:
                    self._stale_dialogs.add(stale)
                    raise
                continue
            if self._deleted:
                session_id, record = self._deleted.popitem()
                try:
                    d = record["dialog"]
                    yield redis.delete(
                        [f"{PREFIX}session:{session_id}", f"{PREFIX}positions:{session_id}", f"{PREFIX}owner:{session_id}",
                         dialog_key(d["call_id"], d["local_tag"], d["remote_tag"])]
                    )
                except BaseException:
                    self._deleted.setdefault(session_id, record)
                    raise
                continue
            if self._dirty:
                session_id = self._dirty.pop()
                try:
                    if session_id == "\0leases":
                        yield redis.set(f"{PREFIX}node:{self.node_id}", "alive", pexpire=lease)
                        for live in list(self._records):
                            yield self._claim(live, lease)
                        continue
                    record = self._records.get(session_id)
                    if record is None or not (yield self._claim(session_id, lease)):
                        continue
                    d = record["dialog"]
                    yield redis.set(f"{PREFIX}session:{session_id}", _dump(record))
                    yield redis.set(dialog_key(d["call_id"], d["local_tag"], d["remote_tag"]), session_id)
                    self.counters["writes"] += 1
                except BaseException:
                    self._dirty.add(session_id)
                    raise
                continue
            session_id = self._dirty_positions.pop()
            positions = self._positions.get(session_id)
            if positions is None or session_id in self._lost:
                continue
            try:
                yield redis.set(f"{PREFIX}positions:{session_id}", _dump(positions))
            except BaseException:
                self._dirty_positions.add(session_id)
                raise

    @inlineCallbacks
    def _claim(self, session_id: str, lease: int) -> Any:
        """Own (or keep owning) a session; False, and ``on_lost``, if another node has it."""
        if session_id in self._lost:
            return False
        owner = yield self.redis.eval(CLAIM, [f"{PREFIX}owner:{session_id}"], [self.node_id, str(lease)])
        if owner == 1:
            return True
        self._lost.add(session_id)
        log.warn(
            "session {session_id} is owned by node {owner} now (taken over): this node stops recording it",
            session_id=session_id, owner=owner,
        )
        if self.on_lost is not None:
            self.on_lost(session_id, str(owner))
        return False
