"""Exchange-agnostic HTTP layer: a request-weight budget and a retrying JSON transport.

Bulk history backfills are what gets IPs banned (ccxt #14639, freqtrade #7187), so every REST
call goes through a ``WeightBudget`` that reserves the request's weight *before* sending and
follows the exchange's own used-weight header *after* receiving. The header is IP-wide: it also
counts what other processes on this machine spent, which a purely local counter cannot see.
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import http.client
import json
import logging
import math
import os
import random
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from petrosa_pipelines.exchanges.base import ExchangeError, MessageError
from petrosa_pipelines.lib.endpoints import RestSettings

log = logging.getLogger(__name__)

#: Binance's header with the IP's used request weight in the current 1-minute window
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
#: the shortest Binance IP ban (418 without Retry-After would be a protocol violation)
DEFAULT_BAN_SECONDS = 120.0
#: the longest: "IP bans are tracked and scale in duration for repeat offenders, from 2 minutes
#: to 3 days" (https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info).
#: A Retry-After beyond it is clamped; a shared budget file claiming more is corrupt.
MAX_BAN_SECONDS = 3 * 86400.0
#: how long a process may sleep for a ban or Retry-After before it fails instead
DEFAULT_MAX_WAIT_SECONDS = 900.0
_WINDOW_SECONDS = 60.0

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class RateLimitedError(ExchangeError):
    """The exchange (or the shared budget) asks for a wait longer than the allowed maximum.

    Sleeping for hours inside a run hides the outage; failing says so, and the wait is kept in
    the shared budget so every other process on the IP fails fast too instead of being banned.
    """

    def __init__(self, message: str, *, wait_seconds: float, status: int | None = None, code=None):
        self.wait_seconds = wait_seconds
        super().__init__(message, status=status, code=code)


class TransportError(ExchangeError):
    """A request that failed below HTTP: connect, timeout, truncated body, undecodable
    content-encoding, or the request's total deadline. Transient: worth a retry.

    ``kind`` is one of ``connection``, ``timeout``, ``truncated``, ``decode``, ``deadline``.
    """

    def __init__(self, message: str, *, kind: str):
        self.kind = kind
        super().__init__(message)


def backoff_delay(
    attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with full jitter (AWS architecture blog): U(0, min(cap, base*2^n)).

    Full jitter spreads retries of many clients hit by the same outage instead of having them
    retry in lock-step.
    """
    return rng() * min(cap, base * (2**attempt))


@dataclass
class _State:
    window: int = -1
    used: int = 0
    blocked_until: float = 0.0


class WeightBudget:
    """Keeps a client under a fraction of the exchange's request-weight limit per minute.

    ``reserve(weight)`` blocks (through the injectable ``sleep``) until the weight fits into the
    current minute window; ``sync(used)`` raises the window's count to what the exchange reports.
    The local count is only ever raised by the header (``max``), so in-flight reservations of
    other threads are never forgotten and a skew between our minute and the server's errs on the
    safe side. ``block_until`` records a 429/418 Retry-After so every user of the budget waits.

    With ``shared_dir`` the state lives in ``<shared_dir>/<name>.weight.json`` guarded by an
    ``fcntl`` lock, so parallel Dagster runs on one machine (one IP) share one budget.
    """

    def __init__(
        self,
        limit_per_minute: int = 2400,
        fraction: float = 0.8,
        *,
        shared_dir: str | os.PathLike[str] | None = None,
        name: str = "binance",
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    ) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if limit_per_minute <= 0:
            raise ValueError(f"limit_per_minute must be > 0, got {limit_per_minute}")
        if not (math.isfinite(max_wait_seconds) and max_wait_seconds > 0):
            raise ValueError(
                f"max_wait_seconds must be a finite number > 0, got {max_wait_seconds}"
            )
        self._limit = limit_per_minute
        self._max_wait = max_wait_seconds
        self._fraction = fraction
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._state = _State()
        self._path: str | None = None
        if shared_dir is not None:
            os.makedirs(shared_dir, exist_ok=True)
            self._path = os.path.join(os.fspath(shared_dir), f"{name}.weight.json")
        #: every (seconds) the budget slept, for tests and run metadata
        self.sleeps: list[float] = []
        #: highest used weight seen in any response header
        self.max_seen_used: int = 0

    @classmethod
    def from_settings(
        cls,
        rest: RestSettings,
        *,
        shared_dir: str | os.PathLike[str] | None = None,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
    ) -> WeightBudget:
        """A budget from ``RestSettings``; ``shared_dir`` defaults to ``rest.weight_budget_dir``
        when the settings carry one (in-process budget otherwise)."""
        if shared_dir is None:
            shared_dir = rest.weight_budget_dir or None
        return cls(
            rest.weight_limit_per_minute,
            rest.weight_budget_fraction,
            shared_dir=shared_dir,
            clock=clock,
            sleep=sleep,
            max_wait_seconds=rest.max_wait_seconds,
        )

    # -- limits -----------------------------------------------------------------------------

    @property
    def limit_per_minute(self) -> int:
        return self._limit

    @property
    def budget_per_minute(self) -> int:
        """The weight this client allows itself per minute (limit x fraction, at least 1)."""
        return max(1, math.floor(self._limit * self._fraction))

    def set_limit(self, limit_per_minute: int) -> None:
        """Adopt the live limit from exchangeInfo ``rateLimits``."""
        if limit_per_minute > 0:
            self._limit = limit_per_minute

    @property
    def used(self) -> int:
        """Weight counted in the current minute window."""
        with self._locked() as state:
            self._roll(state, self._clock())
            return state.used

    # -- operations -------------------------------------------------------------------------

    def reserve(self, weight: int) -> float:
        """Wait until ``weight`` fits the current window, count it, return seconds slept.

        Raises ``RateLimitedError`` instead of sleeping through a block longer than the
        budget's ``max_wait_seconds`` (a long IP ban recorded by any process on the machine).
        """
        slept = 0.0
        while True:
            with self._locked() as state:
                now = self._clock()
                self._roll(state, now)
                if state.blocked_until > now:
                    wait = state.blocked_until - now
                    if wait > self._max_wait:
                        raise RateLimitedError(
                            f"the exchange blocks requests for another {wait:.0f}s (a 429/418 "
                            f"Retry-After), more than the {self._max_wait:.0f}s a run may wait; "
                            "failing instead of sleeping",
                            wait_seconds=wait,
                        )
                elif state.used + weight <= self.budget_per_minute or state.used == 0:
                    # a request heavier than the whole budget still goes alone in a fresh window
                    state.used += weight
                    return slept
                else:
                    wait = (state.window + 1) * _WINDOW_SECONDS - now
            wait = max(wait, 0.001)
            log.info("weight budget: sleeping %.3fs (used %d)", wait, state.used)
            self.sleeps.append(wait)
            self._sleep(wait)
            slept += wait

    def sync(self, used_weight: int) -> None:
        """Adopt the exchange's used-weight header for the current window (never lowers it)."""
        self.max_seen_used = max(self.max_seen_used, used_weight)
        with self._locked() as state:
            self._roll(state, self._clock())
            state.used = max(state.used, used_weight)

    def block_until(self, until: float) -> None:
        """Make every reservation wait until ``until`` (clock seconds): a 429/418 Retry-After.

        Clamped to ``MAX_BAN_SECONDS`` from now; a non-finite time is refused, so the shared
        file only ever holds a number every reader can use.
        """
        if not math.isfinite(until):
            raise ValueError(f"block_until needs a finite time, got {until!r}")
        with self._locked() as state:
            until = min(until, self._clock() + MAX_BAN_SECONDS)
            state.blocked_until = max(state.blocked_until, until)

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _roll(state: _State, now: float) -> None:
        window = int(now // _WINDOW_SECONDS)
        if window != state.window:
            state.window = window
            state.used = 0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_State]:
        with self._lock:
            if self._path is None:
                yield self._state
                return
            with open(self._path + ".lock", "a+") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                try:
                    state = self._read_shared()
                    yield state
                    self._write_shared(state)
                finally:
                    fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _read_shared(self) -> _State:
        """The shared state; a missing, unreadable or implausible file counts as a fresh one
        (and is overwritten by this process's next write) instead of failing every process."""
        assert self._path is not None
        try:
            with open(self._path, encoding="utf-8") as f:
                raw = f.read()
        except FileNotFoundError:
            return _State()
        state = parse_shared_state(raw, self._clock())
        if state is None:
            log.warning(
                "weight budget file %s is corrupt; starting from a fresh budget", self._path
            )
            return _State()
        return state

    def _write_shared(self, state: _State) -> None:
        assert self._path is not None
        tmp = f"{self._path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(
                {"window": state.window, "used": state.used, "blocked_until": state.blocked_until},
                f,
                allow_nan=False,  # a NaN/Infinity here would be unreadable to strict parsers
            )
        os.replace(tmp, self._path)


def parse_shared_state(raw: str, now: float) -> _State | None:
    """The budget state in a shared file's text, or None when it is not one we could have
    written: not JSON, missing keys, non-finite or absurd numbers (``Infinity``, ``1e400``),
    a block further away than the longest ban."""
    try:
        data = json.loads(raw)
        window, used = data["window"], data["used"]
        blocked = data.get("blocked_until", 0.0)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (window, used)):
        return None
    if not isinstance(blocked, int | float) or isinstance(blocked, bool):
        return None
    if not all(math.isfinite(v) for v in (window, used, blocked)) or used < 0:
        return None
    if blocked > now + MAX_BAN_SECONDS:
        return None
    return _State(window=int(window), used=int(used), blocked_until=float(blocked))


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, in [0, ``MAX_BAN_SECONDS``].

    RFC 9110 10.2.3 allows delta-seconds or an HTTP-date (``now`` is needed for the latter).
    Anything else (negative, ``nan``, ``inf``, garbage) is ignored (None: the caller's default
    wait applies); a huge finite value is clamped to the longest documented ban.
    """
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    text = str(raw).strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = _http_date_delta(text, now)
        if seconds is None:
            log.warning("ignoring unreadable Retry-After %r", text[:40])
            return None
    if not math.isfinite(seconds) or seconds < 0:
        log.warning("ignoring Retry-After %r (not a finite, non-negative number)", text[:40])
        return None
    return min(seconds, MAX_BAN_SECONDS)


def _http_date_delta(text: str, now: float | None) -> float | None:
    if now is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    return max(0.0, when.timestamp() - now)


# -- transport: typed failures and a total deadline per request -----------------------------------

_ACTIVE = threading.local()


class _Deadline:
    """Shuts the request's socket down when the deadline passes.

    Per-read timeouts never fire against a server that drips a byte every few hundred ms (the
    header phase included), so a watchdog timer ends the request: ``shutdown`` wakes the
    blocked ``recv`` in the requesting thread, which then fails and is reported as a deadline.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._done = False
        self._conn: HTTPConnection | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _ACTIVE.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:  # a connection back in the pool must never be shut down late
            self._done = True
        self._timer.cancel()
        _ACTIVE.deadline = None

    def attach(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._conn = conn
            if self.expired:
                _shutdown(conn)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            if self._conn is not None:
                _shutdown(self._conn)


def _shutdown(conn: HTTPConnection) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _attach(conn: HTTPConnection) -> None:
    deadline = getattr(_ACTIVE, "deadline", None)
    if deadline is not None:
        deadline.attach(conn)


class _DeadlineMixin:
    """Hands each (re)used connection to the active request's deadline timer."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _attach(self)  # type: ignore[arg-type]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _DeadlineHTTPConnection(_DeadlineMixin, HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineMixin, HTTPSConnection):
    pass


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """A requests adapter whose connections obey the per-request deadline of ``fetch``."""

    _POOLS = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._POOLS)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(*args, **kwargs)
        manager.pool_classes_by_scheme = dict(self._POOLS)
        return manager


def _with_deadline_adapters(session: requests.Session) -> None:
    """Mount ``DeadlineAdapter`` for http(s) unless the session carries custom adapters."""
    for prefix in ("http://", "https://"):
        current = session.adapters.get(prefix)
        if current is None or type(current) is HTTPAdapter:
            session.mount(prefix, DeadlineAdapter())


def fetch(
    session: requests.Session,
    url: str,
    *,
    params: Mapping[str, Any] | None = None,
    timeout: float,
    deadline: float,
) -> requests.Response:
    """GET ``url`` and read the whole body within ``deadline`` seconds (``timeout`` per read).

    Every failure below HTTP becomes a ``TransportError`` with its ``kind``: a body cut short
    (``ChunkedEncodingError``, ``IncompleteRead``), a content-encoding that does not decode
    (corrupt gzip/deflate), timeouts, refused or reset connections, and the deadline. Callers
    retry those within their budget; HTTP statuses are theirs to judge.
    """
    _with_deadline_adapters(session)
    what = f"GET {url}"
    late = f"{what}: no complete answer within the {deadline:g}s deadline"
    guard = _Deadline(deadline)
    resp: requests.Response | None = None
    try:
        with guard:
            resp = session.get(url, params=params, timeout=min(timeout, deadline), stream=True)
            _ = resp.content  # the whole body, decoded, while the deadline watches
    except (
        requests.RequestException,
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
        OSError,
        zlib.error,
    ) as exc:
        if guard.expired:
            raise TransportError(late, kind="deadline") from None
        if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
            raise
        raise TransportError(f"{what}: {_describe(exc)}", kind=_kind(exc)) from None
    finally:
        if resp is not None:  # after the guard: a pooled connection is never shut down late
            resp.close()
    if guard.expired:  # the socket may have been shut down before EOF: never trust the body
        raise TransportError(late, kind="deadline")
    return resp


def _kind(exc: BaseException) -> str:
    if isinstance(exc, requests.exceptions.ContentDecodingError | zlib.error):
        return "decode"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | http.client.IncompleteRead):
        return "truncated"
    if isinstance(exc, requests.Timeout | TimeoutError | urllib3.exceptions.TimeoutError):
        return "timeout"
    if isinstance(exc, requests.ConnectionError) and isinstance(
        exc.args[0] if exc.args else None, urllib3.exceptions.ReadTimeoutError
    ):
        return "timeout"
    return "connection"


def _describe(exc: BaseException) -> str:
    kind = _kind(exc)
    text = {
        "decode": "the body's content-encoding does not decode (corrupt gzip/deflate)",
        "truncated": "the body ended before it was complete",
        "timeout": "timed out",
    }.get(kind, "connection failed")
    return f"{text} ({type(exc).__name__}: {str(exc)[:200]})"


class RestTransport:
    """GET JSON from one base URL within a weight budget, retrying what is worth retrying.

    * 429 / 418: wait ``Retry-After`` (418 = IP ban: the full wait, logged as an error), and make
      the budget wait too; then retry. A wait longer than ``rest.max_wait_seconds`` is recorded
      in the budget and raises ``RateLimitedError`` instead of sleeping for hours.
    * transport failures (``TransportError``: connection, timeout, truncated or undecodable
      body, the per-request ``rest.deadline_seconds``), 5xx: exponential backoff, full jitter.
    * other 4xx: ``ExchangeError(status, code)`` at once; retrying a bad request never helps.
    * more than ``max_retries`` retries: ``ExchangeError`` (``TransportError`` when the last
      failure was one).
    """

    def __init__(
        self,
        base_url: str,
        rest: RestSettings,
        budget: WeightBudget | None = None,
        *,
        session: requests.Session | None = None,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
        rng: Callable[[], float] = random.random,
        used_weight_header: str = USED_WEIGHT_HEADER,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.rest = rest
        self.budget = budget or WeightBudget.from_settings(rest, clock=clock, sleep=sleep)
        self.session = session or requests.Session()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._header = used_weight_header
        #: every (seconds) this transport slept for backoff or Retry-After
        self.sleeps: list[float] = []
        #: every used-weight header value seen, in order
        self.used_weights: list[int] = []

    def get(
        self, path: str, params: Mapping[str, Any] | None = None, weight: int = 1
    ) -> tuple[Any, Mapping[str, str]]:
        """GET ``path`` and return (decoded JSON, response headers)."""
        url = self.base_url + path
        attempt = 0
        while True:
            self.budget.reserve(weight)
            try:
                resp = fetch(
                    self.session,
                    url,
                    params=params,
                    timeout=self.rest.timeout_seconds,
                    deadline=self.rest.deadline_seconds,
                )
            except TransportError as exc:
                attempt = self._backoff(attempt, str(exc), kind=exc.kind)
                continue
            self._sync(resp.headers)
            status = resp.status_code
            if status in (429, 418):
                attempt = self._rate_limited(attempt, path, resp)
                continue
            if status >= 500:
                attempt = self._backoff(attempt, f"GET {path}: HTTP {status}")
                continue
            if status >= 400:
                raise self._client_error(path, resp)
            try:
                return resp.json(), resp.headers
            except ValueError:
                raise MessageError(
                    f"GET {path} returned a body that is not JSON", raw=resp.content[:500]
                ) from None

    def close(self) -> None:
        self.session.close()

    # -- internals --------------------------------------------------------------------------

    def _sync(self, headers: Mapping[str, str]) -> None:
        raw = headers.get(self._header)
        if raw is None:
            return
        try:
            used = int(raw)
        except ValueError:
            log.warning("ignoring non-integer %s header %r", self._header, raw)
            return
        self.used_weights.append(used)
        self.budget.sync(used)

    def _wait(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._sleep(seconds)

    def _backoff(self, attempt: int, what: str, kind: str | None = None) -> int:
        if attempt >= self.rest.max_retries:
            message = f"{what}; giving up after {attempt} retries"
            if kind is not None:
                raise TransportError(message, kind=kind)
            raise ExchangeError(message)
        delay = backoff_delay(
            attempt, self.rest.backoff_base_seconds, self.rest.backoff_max_seconds, self._rng
        )
        log.warning("%s; retry %d in %.2fs", what, attempt + 1, delay)
        self._wait(delay)
        return attempt + 1

    def _rate_limited(self, attempt: int, path: str, resp: requests.Response) -> int:
        status = resp.status_code
        if attempt >= self.rest.max_retries:
            raise ExchangeError(
                f"GET {path}: HTTP {status} after {attempt} retries",
                status=status,
                code=_binance_code(resp),
            )
        retry_after = retry_after_seconds(resp.headers, self._clock())
        if retry_after is None:
            retry_after = (
                DEFAULT_BAN_SECONDS
                if status == 418
                else backoff_delay(
                    attempt,
                    self.rest.backoff_base_seconds,
                    self.rest.backoff_max_seconds,
                    self._rng,
                )
            )
        # every process sharing the budget honours the wait, even when this one gives up
        self.budget.block_until(self._clock() + retry_after)
        if retry_after > self.rest.max_wait_seconds:
            raise RateLimitedError(
                f"GET {path}: HTTP {status} with Retry-After {retry_after:.0f}s, more than the "
                f"{self.rest.max_wait_seconds:.0f}s a run may wait (PETROSA_REST_MAX_WAIT_SECONDS)"
                "; failing instead of sleeping",
                wait_seconds=retry_after,
                status=status,
                code=_binance_code(resp),
            )
        if status == 418:
            log.error(
                "GET %s: IP banned (418); waiting the full Retry-After %.0fs", path, retry_after
            )
        else:
            log.warning("GET %s: rate limited (429); waiting Retry-After %.0fs", path, retry_after)
        self._wait(retry_after)
        return attempt + 1

    def _client_error(self, path: str, resp: requests.Response) -> ExchangeError:
        code = _binance_code(resp)
        try:
            msg = resp.json().get("msg", resp.text[:200])
        except (ValueError, AttributeError):
            msg = resp.text[:200]
        return ExchangeError(
            f"GET {path}: HTTP {resp.status_code} code={code} {msg}",
            status=resp.status_code,
            code=code,
        )


def _binance_code(resp: requests.Response) -> int | None:
    """Binance's error ``code`` from a ``{"code": -1121, "msg": ...}`` body, if any."""
    try:
        body = resp.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("code"), int):
        return body["code"]
    return None
