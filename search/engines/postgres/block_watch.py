"""When a search process must check its block directory: after a notification, at least
every `recheck_s`, and on every query while it is not listening.

A process keeps a directory of the facet blocks (`block_sync`). Checking it with every
list query would cost a statement, and a round trip to another process, per query: most
of what a query answered from the blocks spends in PostgreSQL. Instead, the blocks
tables notify the channel `search_blocks` (payload: the family, `tutor` or `coach`) from
a statement-level trigger on every write (migration 0013), and a reindex notifies when
it swaps a table in. `BlockWatch` holds one LISTEN connection per process and says, per
family, whether a check is due (`due`):

- a notification arrived since the last check began (`token` / `checked`);
- the last check began `recheck_s` ago or more (1 s by default): a bound on staleness
  whatever happens to notifications (a silent network partition, a write made with
  triggers disabled);
- the watch is not listening (not started yet, connection lost, or refused: LISTEN is
  not allowed on a hot standby, so a `DATABASE_READ_URL` replica gets a check per
  query). Listening (again) marks every family due, since notifications sent
  before the LISTEN are not delivered.

Why a check that begins after a notification sees the write: PostgreSQL delivers a
notification once the sending transaction is no longer in progress and is visible to
new snapshots (`async.c`: the queue is read up to the first transaction still in
progress; the commit leaves the proc array before `AtCommit_Notify`). So the consistency
is: a query reflects every write whose notification this process had received when the
query began, and every write committed `recheck_s` before it. A write and a query that
race (the notification on its way) may miss each other, as with any near-real-time
search index (OpenSearch's refresh interval); a caller that needs every committed write,
such as the cache filling an entry for a generation bumped after a commit, asks for a
check with `search.engine.fresh_reads()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge

from core.logging import get_logger

log = get_logger(__name__)

CHANNEL = "search_blocks"
FAMILIES = ("tutor", "coach")

NOTIFICATIONS = Counter(
    "educonnect_search_block_notifications_total",
    "Notifications that facet blocks were written, received by this process's block watch.",
)
LISTENING = Gauge(
    "educonnect_search_block_watch_listening",
    "1 while this process's block watch listens (else every query checks the block directory).",
)

# (epoch, notifications of the family, clock) when a check began
Token = tuple[int, int, float]


class BlockWatch:
    """Which block families a process must check before answering (`due`). `conninfo`: a
    libpq URL of the primary (or the database the blocks are read from); `recheck_s`:
    the longest time between two checks of a family (seconds); `retry_s`: the wait
    before listening again after the connection failed; `ping_s`: how long the listener
    waits for a notification before it checks that its connection still answers;
    `clock`: monotonic seconds (tests move it)."""

    def __init__(
        self,
        conninfo: str,
        *,
        recheck_s: float = 1.0,
        retry_s: float = 5.0,
        ping_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conninfo = conninfo
        self.recheck_s = recheck_s
        self.retry_s = retry_s
        self.ping_s = ping_s
        self.clock = clock
        self.listening = False
        self.backend_pid: int | None = None  # of the LISTEN session, while listening
        self.notifications = 0
        # bumped when listening starts or stops: every family is due again
        self._epoch = 0
        self._notified = dict.fromkeys(FAMILIES, 0)
        self._checked: dict[str, Token] = {}
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # set on every notification and state change

    def start(self) -> None:
        """Start listening in a task of the running loop (returns at once: until the
        LISTEN is in place, every family is due)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        """Stop listening."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._down()

    def due(self, family: str) -> bool:
        """Whether `family`'s directory must be checked before a query uses it: not
        listening, notified since the last check began, or last checked `recheck_s`
        ago or more (never checked included)."""
        if not self.listening:
            return True
        last = self._checked.get(family)
        return (
            last is None
            or last[0] != self._epoch
            or last[1] != self._notified.get(family, 0)
            or self.clock() - last[2] >= self.recheck_s
        )

    def token(self, family: str) -> Token:
        """What a check of `family` that begins now will have seen: pass it to `checked`
        once the check's answer is applied. Take it before the check's statement is
        sent (earlier is safe: a notification in between only makes the next query
        check again)."""
        return (self._epoch, self._notified.get(family, 0), self.clock())

    def checked(self, family: str, token: Token) -> None:
        """Record a check of `family` that began at `token` (the latest one wins: checks
        of concurrent queries may end out of order)."""
        last = self._checked.get(family)
        if last is None or token > last:
            self._checked[family] = token

    async def changed(self, timeout_s: float) -> bool:
        """Wait until a notification arrives or listening starts or stops, at most
        `timeout_s` seconds; whether one did (for tests and tools, not the query path)."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _notify(self, payload: str) -> None:
        self.notifications += 1
        NOTIFICATIONS.inc()
        if payload in self._notified:
            self._notified[payload] += 1
        else:  # not a family we know: check them all
            self._epoch += 1
        self._changed.set()

    def _up(self, backend_pid: int) -> None:
        self.backend_pid = backend_pid
        self._epoch += 1
        self.listening = True
        LISTENING.set(1)
        self._changed.set()

    def _down(self) -> None:
        if self.listening:
            self.listening = False
            self.backend_pid = None
            self._epoch += 1
            LISTENING.set(0)
            self._changed.set()

    async def _listen(self) -> None:
        while True:
            try:
                await self._session()
            except psycopg.errors.ReadOnlySqlTransaction as exc:
                # a hot standby refuses LISTEN: stay unwatched (a check per query)
                log.info("search_block_watch_unavailable", error=repr(exc))
                return
            except psycopg.Error as exc:
                log.warning("search_block_watch_down", error=repr(exc), retry_s=self.retry_s)
            finally:
                self._down()
            await asyncio.sleep(self.retry_s)

    async def _session(self) -> None:
        conn: psycopg.AsyncConnection[Any] = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, application_name="educonnect-block-watch"
        )
        async with conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            # after the LISTEN: a check that begins now misses nothing
            self._up(conn.info.backend_pid)
            while True:
                async for n in conn.notifies(timeout=self.ping_s):
                    self._notify(n.payload)
                await conn.execute("SELECT 1")  # a quiet spell: does the connection answer?
