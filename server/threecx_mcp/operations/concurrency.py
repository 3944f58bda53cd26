"""How many write requests a bulk operation keeps in flight: bounded, and adaptive to a PBX that pushes back.

At 30 ms a request, 10,000 writes one after another take five minutes, past every client's timeout;
all at once they would swamp the PBX (and trip its rate limit). So the many-writes paths (bulk add,
restore, re-creation) send through an `AdaptiveLimiter`: at most `max_in_flight` requests at once
(THREECX_MAX_IN_FLIGHT, default 8). A 429 or 503 halves the limit (not below 1) and a `Retry-After`
pauses every worker until then; a run of clean answers lets the limit grow back by one. Only anyio
tasks and a counter: no threads, and the bound holds however the tasks interleave.

Requests are also paced: started no closer together than a little under the time a request takes,
divided by the limit. Without it, the first `limit` requests leave together, come back together and
are handled by one event loop in turn, so each waits for all the others' handling, every round: at
30 ms a request and 8 in flight, that cost 4 to 6 ms a round (bench/latency.py). By Little's law the
pace never holds back a window that is full anyway (`limit` requests each taking the average time);
it only spreads them out.

There is one limiter per client, so per PBX (`limiter_for`): two bulk operations at once share the bound
and the pace, and the PBX never sees more than `max_in_flight` of this server's writes at a time.

The client tells the limiter about each 429/503 it meets (including those it retries by itself,
which the caller never sees) through `client.throttle_listener`, a context variable that each slot
sets for the task that holds it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TypeVar
from weakref import WeakKeyDictionary

import anyio

from ..client import XapiClient, throttle_listener
from ..errors import RateLimited
from .outcomes import LONGEST_WAIT_SECONDS

DEFAULT_MAX_IN_FLIGHT = 8
MAX_IN_FLIGHT_LIMIT = 64
# A 429 the client gave up on (its Retry-After beyond its own budget) is tried this many times in all:
# the PBX refused it before doing anything, so sending it again is always safe.
_THROTTLED_ATTEMPTS = 4
_THROTTLED_PAUSE = 1.0  # seconds all workers wait after such a 429 when the PBX named no wait
# Pacing: starts are spaced by this share of (average request time / limit), so the pace is always a
# little faster than a full window can go and never the bottleneck; the average is smoothed over about
# 1 / _SMOOTHING requests.
_PACE_SHARE = 0.85
_SMOOTHING = 0.1

_T = TypeVar("_T")
_LIMITERS: WeakKeyDictionary[XapiClient, AdaptiveLimiter] = WeakKeyDictionary()


class AdaptiveLimiter:
    """At most `limit` requests at once; `limit` halves on throttling and grows back on clean answers."""

    def __init__(self, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        if not 1 <= max_in_flight <= MAX_IN_FLIGHT_LIMIT:
            raise ValueError(
                f"max_in_flight must be between 1 and {MAX_IN_FLIGHT_LIMIT}, not {max_in_flight}"
            )
        self.ceiling = max_in_flight
        self.limit = max_in_flight
        self.in_flight = 0
        self.peak = 0  # the most requests this limiter let out at once
        self.throttles = 0  # 429/503 answers seen
        self._resume_at = 0.0  # no new request before this (anyio clock): the PBX's Retry-After
        self._clean = 0  # answers in a row, since the last throttle, that count towards growing back
        self._changed = anyio.Event()
        self._request_seconds: float | None = None  # smoothed time a request holds its slot
        self._next_start = 0.0  # anyio clock: the paced start of the next request

    def throttled(self, retry_after: float | None) -> None:
        """A 429 or 503: halve the limit, and pause every worker for the PBX's Retry-After (one longer
        than an operation waits ends the operation instead: see `outcomes.stops_the_operation`)."""
        self.throttles += 1
        self.limit = max(1, self.limit // 2)
        self._clean = 0
        if retry_after is not None and retry_after <= LONGEST_WAIT_SECONDS:
            self._resume_at = max(self._resume_at, anyio.current_time() + retry_after)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the `limit` places for one request (the client's own retries of it included)."""
        await self._acquire()
        throttles = self.throttles
        token = throttle_listener.set(self.throttled)
        try:
            await self._paced()
            started = anyio.current_time()
            yield
            self._took(anyio.current_time() - started)
        finally:
            throttle_listener.reset(token)
            self.in_flight -= 1
            if self.throttles == throttles:
                self._answered_cleanly()
            self._wake()

    async def call(self, request: Callable[[], Awaitable[_T]]) -> _T:
        """`request()` in a slot; a 429 the client gave up on is sent again after the pause, a few times,
        unless the PBX asked for a wait longer than an operation waits (then it is the caller's failure)."""
        for attempt in range(1, _THROTTLED_ATTEMPTS + 1):
            async with self.slot():
                try:
                    return await request()
                except RateLimited as exc:
                    pause = exc.retry_after if exc.retry_after is not None else _THROTTLED_PAUSE
                    if attempt == _THROTTLED_ATTEMPTS or pause > LONGEST_WAIT_SECONDS:
                        raise
                    self._resume_at = max(self._resume_at, anyio.current_time() + pause)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _acquire(self) -> None:
        while True:
            wait = self._resume_at - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)
                continue
            if self.in_flight < self.limit:
                self.in_flight += 1  # no await between the check and the count: the bound is exact
                self.peak = max(self.peak, self.in_flight)
                return
            await self._changed.wait()

    async def _paced(self) -> None:
        """Wait for this request's turn: no sooner than the pace allows after the one before it."""
        now = anyio.current_time()
        start = max(now, self._next_start)
        if self._request_seconds is not None:
            self._next_start = start + _PACE_SHARE * self._request_seconds / self.limit
        if start > now:
            await anyio.sleep(start - now)

    def _took(self, seconds: float) -> None:
        """Fold one answered request's time into the smoothed average the pace is taken from."""
        previous = self._request_seconds
        self._request_seconds = seconds if previous is None else previous + _SMOOTHING * (seconds - previous)

    def _answered_cleanly(self) -> None:
        """Additive increase: one more place after a full window of answers without a throttle."""
        self._clean += 1
        if self._clean >= self.limit and self.limit < self.ceiling:
            self.limit += 1
            self._clean = 0

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()


def share_limit(client: XapiClient, other: XapiClient) -> None:
    """Let `client` write under `other`'s limiter: two clients of one PBX (two names in the config file for
    one URL) must not push it twice as hard."""
    _LIMITERS[client] = limiter_for(other)


def limiter_for(client: XapiClient) -> AdaptiveLimiter:
    """The one limiter of this client's PBX (`client.max_in_flight` places), made when first needed."""
    limiter = _LIMITERS.get(client)
    if limiter is None:
        limiter = _LIMITERS[client] = AdaptiveLimiter(client.max_in_flight)
    return limiter


async def for_each(items: Iterable[_T], work: Callable[[_T], Awaitable[None]], *, workers: int) -> None:
    """`work(item)` for every item, started in order by `workers` tasks (each request in it takes a slot).

    An exception in one item's work (a cancellation included) cancels the others and propagates; the
    work functions keep their own account of what was in flight, so the caller can settle it.
    """
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:  # shared: each item is taken by exactly one worker
            await work(item)

    async with anyio.create_task_group() as group:
        for _ in range(workers):
            group.start_soon(worker)
