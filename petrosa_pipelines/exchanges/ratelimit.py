"""Venue-neutral rate limiting: a venue's declared ``RateModel`` and the ``WeightBudget`` that
keeps every process on this machine (one IP) inside it.

Bulk history backfills are what gets IPs banned (ccxt #14639, freqtrade #7187), so every REST
call reserves its weight *before* sending and follows the venue's own counters *after*
receiving. Each venue declares its limits as data in its package (``exchanges/<venue>/rest.py``);
nothing here knows a venue.
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from petrosa_pipelines.exchanges.base import ExchangeError
from petrosa_pipelines.lib.endpoints import RestSettings

log = logging.getLogger(__name__)

#: the ceiling of any wait a venue may ask for (a Retry-After, a reset time, a shared block):
#: 3 days, the longest ban a supported venue documents. A longer one is clamped; a shared
#: budget file claiming more is corrupt.
MAX_BAN_SECONDS = 3 * 86400.0
#: how long a process may sleep for a ban or Retry-After before it fails instead
DEFAULT_MAX_WAIT_SECONDS = 900.0

Clock = Callable[[], float]
Sleep = Callable[[float], None]


def no_code(body: Any) -> int | None:
    """An error-code reader for venues whose bodies carry none."""
    return None


@dataclass(frozen=True)
class RateModel:
    """How one venue limits REST requests from one IP, and how it says so.

    * ``name`` names the limit's domain and the shared budget file (``<name>.weight.json``):
      venues that share a limit (every market on one host) share a name, venues that do not
      never do, so their budgets never mix.
    * ``limit`` per ``window_seconds``: weight units (one per request where the venue counts
      requests). ``rolling``: the venue counts any span of that length, not aligned windows;
      the budget then allows itself half per aligned window, so no span can hold more.
    * ``used_weight_header``: the IP's used weight in the current window (raises our count).
      ``remaining_header`` / ``reset_header``: requests left, and when (epoch ms) the window
      resets; at 0 left every user of the budget waits for the reset.
    * ``rate_limit_statuses``: HTTP statuses that mean "slow down": wait ``Retry-After`` (else
      ``ban_seconds[status]``, else backoff) and retry. A status in ``ban_seconds`` is an IP
      ban and logged as an error.
    * ``error_code`` / ``error_message``: the venue's code and text in an error body.
      ``body_error``: the code of an error carried in a 2xx body (None: success); with it,
      ``rate_limit_codes`` wait for the reset and retry, ``retry_codes`` back off and retry,
      any other code is an ``ExchangeError`` at once.
    """

    name: str
    limit: int
    window_seconds: float
    rolling: bool = False
    used_weight_header: str | None = None
    remaining_header: str | None = None
    reset_header: str | None = None
    rate_limit_statuses: frozenset[int] = frozenset({429})
    ban_seconds: Mapping[int, float] = field(default_factory=dict)
    error_code: Callable[[Any], int | None] = no_code
    error_message: Callable[[Any], str | None] = no_code
    body_error: Callable[[Any], int | None] | None = None
    rate_limit_codes: frozenset[int] = frozenset()
    retry_codes: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if not self.name or os.sep in self.name or self.name.startswith("."):
            raise ValueError(f"a rate model needs a plain file name, got {self.name!r}")
        if self.limit <= 0 or not (math.isfinite(self.window_seconds) and self.window_seconds > 0):
            raise ValueError(f"{self.name}: limit and window must be > 0")


class RateLimitedError(ExchangeError):
    """The exchange (or the shared budget) asks for a wait longer than the allowed maximum.

    Sleeping for hours inside a run hides the outage; failing says so, and the wait is kept in
    the shared budget so every other process on the IP fails fast too instead of being banned.
    """

    def __init__(self, message: str, *, wait_seconds: float, status: int | None = None, code=None):
        self.wait_seconds = wait_seconds
        super().__init__(message, status=status, code=code)


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
    """Keeps a client under a fraction of its venue's limit per window (``RateModel``).

    ``reserve(weight)`` blocks (through the injectable ``sleep``) until the weight fits into the
    current window; ``sync(used)`` raises the window's count to what the exchange reports.
    The local count is only ever raised by the header (``max``), so in-flight reservations of
    other threads are never forgotten and a skew between our window and the server's errs on
    the safe side. ``block_until`` records a rate-limit wait so every user of the budget waits.

    With ``shared_dir`` the state lives in ``<shared_dir>/<model.name>.weight.json`` guarded by
    an ``fcntl`` lock, so parallel Dagster runs on one machine (one IP) share one budget per
    venue limit.
    """

    def __init__(
        self,
        model: RateModel,
        fraction: float = 0.8,
        *,
        shared_dir: str | os.PathLike[str] | None = None,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    ) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if not (math.isfinite(max_wait_seconds) and max_wait_seconds > 0):
            raise ValueError(
                f"max_wait_seconds must be a finite number > 0, got {max_wait_seconds}"
            )
        self.model = model
        self._limit = model.limit
        self._window = model.window_seconds
        self._max_wait = max_wait_seconds
        self._fraction = fraction
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._state = _State()
        self._path: str | None = None
        if shared_dir is not None:
            os.makedirs(shared_dir, exist_ok=True)
            self._path = os.path.join(os.fspath(shared_dir), f"{model.name}.weight.json")
        #: every (seconds) the budget slept, for tests and run metadata
        self.sleeps: list[float] = []
        #: highest used weight seen in any response header
        self.max_seen_used: int = 0

    @classmethod
    def from_settings(
        cls,
        rest: RestSettings,
        model: RateModel,
        *,
        shared_dir: str | os.PathLike[str] | None = None,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
    ) -> WeightBudget:
        """A budget for ``model`` with the fraction and maximum wait of ``RestSettings``;
        ``shared_dir`` defaults to ``rest.weight_budget_dir`` when the settings carry one
        (in-process budget otherwise)."""
        if shared_dir is None:
            shared_dir = rest.weight_budget_dir or None
        return cls(
            model,
            rest.weight_budget_fraction,
            shared_dir=shared_dir,
            clock=clock,
            sleep=sleep,
            max_wait_seconds=rest.max_wait_seconds,
        )

    # -- limits -----------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The venue's limit per window (the model's, or the live one from ``set_limit``)."""
        return self._limit

    @property
    def window_seconds(self) -> float:
        return self._window

    @property
    def budget_per_window(self) -> int:
        """The weight this client allows itself per aligned window: limit x fraction (halved
        for a rolling window, see ``RateModel``), at least 1."""
        share = self._limit * self._fraction / (2 if self.model.rolling else 1)
        return max(1, math.floor(share))

    def set_limit(self, limit: int) -> None:
        """Adopt the live limit per window the venue publishes (ignored unless > 0)."""
        if limit > 0:
            self._limit = limit

    @property
    def used(self) -> int:
        """Weight counted in the current window."""
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
                            f"{self.model.name} blocks requests for another {wait:.0f}s (a "
                            f"rate-limit wait), more than the {self._max_wait:.0f}s a run may "
                            "wait; failing instead of sleeping",
                            wait_seconds=wait,
                        )
                elif state.used + weight <= self.budget_per_window or state.used == 0:
                    # a request heavier than the whole budget still goes alone in a fresh window
                    state.used += weight
                    return slept
                else:
                    wait = (state.window + 1) * self._window - now
            wait = max(wait, 0.001)
            log.info("%s budget: sleeping %.3fs (used %d)", self.model.name, wait, state.used)
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
        """Make every reservation wait until ``until`` (clock seconds): a rate-limit wait.

        Clamped to ``MAX_BAN_SECONDS`` from now; a non-finite time is refused, so the shared
        file only ever holds a number every reader can use.
        """
        if not math.isfinite(until):
            raise ValueError(f"block_until needs a finite time, got {until!r}")
        with self._locked() as state:
            until = min(until, self._clock() + MAX_BAN_SECONDS)
            state.blocked_until = max(state.blocked_until, until)

    # -- internals --------------------------------------------------------------------------

    def _roll(self, state: _State, now: float) -> None:
        window = int(now // self._window)
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


def reset_after_seconds(headers: Mapping[str, str], header: str | None, now: float) -> float | None:
    """Seconds until the epoch-ms time in ``header`` (a venue's window reset), in
    [0, ``MAX_BAN_SECONDS``]; None when the venue has no such header or it is not a number."""
    raw = None if header is None else headers.get(header)
    if raw is None or not str(raw).strip().isdigit():
        return None
    return min(max(int(str(raw).strip()) / 1000 - now, 0.0), MAX_BAN_SECONDS)
