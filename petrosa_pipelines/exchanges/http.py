"""Exchange-agnostic HTTP layer: a request-weight budget and a retrying JSON transport.

Bulk history backfills are what gets IPs banned (ccxt #14639, freqtrade #7187), so every REST
call goes through a ``WeightBudget`` that reserves the request's weight *before* sending and
follows the exchange's own used-weight header *after* receiving. The header is IP-wide: it also
counts what other processes on this machine spent, which a purely local counter cannot see.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from petrosa_pipelines.exchanges.base import ExchangeError, MessageError
from petrosa_pipelines.settings import RestSettings

log = logging.getLogger(__name__)

#: Binance's header with the IP's used request weight in the current 1-minute window
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
#: the shortest Binance IP ban (418 without Retry-After would be a protocol violation)
DEFAULT_BAN_SECONDS = 120.0
_WINDOW_SECONDS = 60.0

Clock = Callable[[], float]
Sleep = Callable[[float], None]


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
    ) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if limit_per_minute <= 0:
            raise ValueError(f"limit_per_minute must be > 0, got {limit_per_minute}")
        self._limit = limit_per_minute
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
        """Wait until ``weight`` fits the current window, count it, return seconds slept."""
        slept = 0.0
        while True:
            with self._locked() as state:
                now = self._clock()
                self._roll(state, now)
                if state.blocked_until > now:
                    wait = state.blocked_until - now
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
        """Make every reservation wait until ``until`` (clock seconds): a 429/418 Retry-After."""
        with self._locked() as state:
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
        assert self._path is not None
        try:
            with open(self._path, encoding="utf-8") as f:
                raw = json.load(f)
            return _State(
                window=int(raw["window"]),
                used=int(raw["used"]),
                blocked_until=float(raw.get("blocked_until", 0.0)),
            )
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return _State()

    def _write_shared(self, state: _State) -> None:
        assert self._path is not None
        tmp = f"{self._path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(
                {"window": state.window, "used": state.used, "blocked_until": state.blocked_until},
                f,
            )
        os.replace(tmp, self._path)


def _retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


class RestTransport:
    """GET JSON from one base URL within a weight budget, retrying what is worth retrying.

    * 429 / 418: wait ``Retry-After`` (418 = IP ban: the full wait, logged as an error), and make
      the budget wait too; then retry.
    * connection errors, timeouts, 5xx: exponential backoff with full jitter.
    * other 4xx: ``ExchangeError(status, code)`` at once; retrying a bad request never helps.
    * more than ``max_retries`` retries: ``ExchangeError``.
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
                resp = self.session.get(url, params=params, timeout=self.rest.timeout_seconds)
            except (requests.ConnectionError, requests.Timeout) as exc:
                attempt = self._backoff(attempt, f"GET {path}: {exc!r}")
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

    def _backoff(self, attempt: int, what: str) -> int:
        if attempt >= self.rest.max_retries:
            raise ExchangeError(f"{what}; giving up after {attempt} retries")
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
        retry_after = _retry_after_seconds(resp.headers)
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
        if status == 418:
            log.error(
                "GET %s: IP banned (418); waiting the full Retry-After %.0fs", path, retry_after
            )
        else:
            log.warning("GET %s: rate limited (429); waiting Retry-After %.0fs", path, retry_after)
        self.budget.block_until(self._clock() + retry_after)
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
