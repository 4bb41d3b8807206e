"""Venue-neutral retrying GETs: JSON from a venue's REST API within its ``RateModel`` and
``WeightBudget`` (``RestTransport``), and files from its archives (``download``).

What a venue's limits and error bodies look like is data each venue declares
(``exchanges/<venue>/rest.py``); this module only follows it. Below the status line every
request is ``http.fetch``: typed failures and a total deadline.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Self

import requests

from petrosa_pipelines.exchanges.base import ExchangeError, MessageError
from petrosa_pipelines.exchanges.http import TransportError, fetch
from petrosa_pipelines.exchanges.ratelimit import (
    Clock,
    RateLimitedError,
    RateModel,
    Sleep,
    WeightBudget,
    backoff_delay,
    reset_after_seconds,
    retry_after_seconds,
)
from petrosa_pipelines.lib.endpoints import RestSettings

log = logging.getLogger(__name__)


class TransportClient:
    """A venue's REST client over one ``RestTransport``: closing and the context manager."""

    transport: RestTransport

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RestTransport:
    """GET JSON from one base URL within a venue's budget, retrying what is worth retrying.

    The venue's ``RateModel`` says what each answer means:

    * a ``rate_limit_statuses`` status: wait ``Retry-After`` (else the model's ban time for
      that status, logged as an IP ban, else backoff) and make the budget wait too; then
      retry. A wait longer than ``rest.max_wait_seconds`` is recorded in the budget and raises
      ``RateLimitedError`` instead of sleeping for hours.
    * transport failures (``TransportError``: connection, timeout, truncated or undecodable
      body, the per-request ``rest.deadline_seconds``), 5xx: exponential backoff, full jitter.
    * other 4xx: ``ExchangeError(status, code)`` at once; retrying a bad request never helps.
    * a 2xx body carrying an error (``model.body_error``): rate-limit codes wait for the
      venue's reset, retry codes back off, any other code raises at once.
    * more than ``max_retries`` retries: ``ExchangeError`` (``TransportError`` when the last
      failure was one).
    """

    def __init__(
        self,
        base_url: str,
        rest: RestSettings,
        model: RateModel,
        budget: WeightBudget | None = None,
        *,
        session: requests.Session | None = None,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if budget is not None and budget.model.name != model.name:
            raise ValueError(
                f"a {model.name} transport cannot spend the {budget.model.name} budget"
            )
        self.base_url = base_url.rstrip("/")
        self.rest = rest
        self.model = model
        self.budget = budget or WeightBudget.from_settings(rest, model, clock=clock, sleep=sleep)
        self.session = session or requests.Session()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        #: every (seconds) this transport slept for backoff, Retry-After or a venue's reset
        self.sleeps: list[float] = []
        #: every used-weight header value seen, in order
        self.used_weights: list[int] = []
        #: every remaining-requests header value seen, in order
        self.remaining: list[int] = []

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
            if status in self.model.rate_limit_statuses:
                attempt = self._rate_limited(attempt, path, resp)
                continue
            if status >= 500:
                attempt = self._backoff(attempt, f"GET {path}: HTTP {status}")
                continue
            if status >= 400:
                raise self._client_error(path, resp)
            try:
                body = resp.json()
            except ValueError:
                raise MessageError(
                    f"GET {path} returned a body that is not JSON", raw=resp.content[:500]
                ) from None
            code = None if self.model.body_error is None else self.model.body_error(body)
            if code is None:
                return body, resp.headers
            attempt = self._body_error(attempt, path, resp, body, code)

    def close(self) -> None:
        self.session.close()

    # -- internals --------------------------------------------------------------------------

    def _sync(self, headers: Mapping[str, str]) -> None:
        """Follow the venue's counters: used weight raises the budget's count; no requests
        left blocks the budget until the venue's reset."""
        used = _int_header(headers, self.model.used_weight_header)
        if used is not None:
            self.used_weights.append(used)
            self.budget.sync(used)
        left = _int_header(headers, self.model.remaining_header)
        if left is not None:
            self.remaining.append(left)
            now = self._clock()
            reset = reset_after_seconds(headers, self.model.reset_header, now)
            if left <= 0 and reset:
                self.budget.block_until(now + reset)

    def _wait(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._sleep(seconds)

    def _backoff(
        self, attempt: int, what: str, kind: str | None = None, *, status=None, code=None
    ) -> int:
        if attempt >= self.rest.max_retries:
            message = f"{what}; giving up after {attempt} retries"
            if kind is not None:
                raise TransportError(message, kind=kind)
            raise ExchangeError(message, status=status, code=code)
        delay = backoff_delay(
            attempt, self.rest.backoff_base_seconds, self.rest.backoff_max_seconds, self._rng
        )
        log.warning("%s; retry %d in %.2fs", what, attempt + 1, delay)
        self._wait(delay)
        return attempt + 1

    def _rate_limited(self, attempt: int, path: str, resp: requests.Response) -> int:
        status = resp.status_code
        code = self._code(resp)
        if attempt >= self.rest.max_retries:
            raise ExchangeError(
                f"GET {path}: HTTP {status} after {attempt} retries", status=status, code=code
            )
        ban = self.model.ban_seconds.get(status)
        retry_after = retry_after_seconds(resp.headers, self._clock())
        if retry_after is None:
            retry_after = ban if ban is not None else self._jitter(attempt)
        # every process sharing the budget honours the wait, even when this one gives up
        self.budget.block_until(self._clock() + retry_after)
        self._refuse_long_wait(
            f"GET {path}: HTTP {status} with Retry-After {retry_after:.0f}s",
            retry_after,
            status,
            code,
        )
        if ban is not None:
            log.error(
                "GET %s: IP banned (%d); waiting the full Retry-After %.0fs",
                path,
                status,
                retry_after,
            )
        else:
            log.warning(
                "GET %s: rate limited (%d); waiting Retry-After %.0fs", path, status, retry_after
            )
        self._wait(retry_after)
        return attempt + 1

    def _body_error(
        self, attempt: int, path: str, resp: requests.Response, body: Any, code: int
    ) -> int:
        status = resp.status_code
        what = f"GET {path}: code {code} {self.model.error_message(body) or ''}".rstrip()
        if code in self.model.retry_codes:
            return self._backoff(attempt, what, status=status, code=code)
        if code not in self.model.rate_limit_codes:
            raise ExchangeError(what, status=status, code=code)
        if attempt >= self.rest.max_retries:
            raise ExchangeError(
                f"{what}; giving up after {attempt} retries", status=status, code=code
            )
        wait = reset_after_seconds(resp.headers, self.model.reset_header, self._clock())
        if not wait:
            wait = self._jitter(attempt)
        self._refuse_long_wait(f"{what}: the venue resets in {wait:.0f}s", wait, status, code)
        log.warning("%s; waiting %.2fs for the venue's reset", what, wait)
        self._wait(wait)
        return attempt + 1

    def _jitter(self, attempt: int) -> float:
        return backoff_delay(
            attempt, self.rest.backoff_base_seconds, self.rest.backoff_max_seconds, self._rng
        )

    def _refuse_long_wait(self, what: str, wait: float, status: int, code: int | None) -> None:
        if wait > self.rest.max_wait_seconds:
            raise RateLimitedError(
                f"{what}, more than the "
                f"{self.rest.max_wait_seconds:.0f}s a run may wait (PETROSA_REST_MAX_WAIT_SECONDS)"
                "; failing instead of sleeping",
                wait_seconds=wait,
                status=status,
                code=code,
            )

    def _code(self, resp: requests.Response) -> int | None:
        try:
            return self.model.error_code(resp.json())
        except ValueError:
            return None

    def _client_error(self, path: str, resp: requests.Response) -> ExchangeError:
        code = self._code(resp)
        try:
            msg = self.model.error_message(resp.json()) or resp.text[:200]
        except ValueError:
            msg = resp.text[:200]
        return ExchangeError(
            f"GET {path}: HTTP {resp.status_code} code={code} {msg}",
            status=resp.status_code,
            code=code,
        )


def _int_header(headers: Mapping[str, str], name: str | None) -> int | None:
    """An integer header of the venue's model; None when absent or unreadable."""
    raw = None if name is None else headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        log.warning("ignoring non-integer %s header %r", name, raw)
        return None


def download(
    session: requests.Session,
    url: str,
    rest: RestSettings,
    *,
    retry_statuses: frozenset[int],
    sleep: Sleep = time.sleep,
    rng: Callable[[], float] = random.random,
    sleeps: list[float] | None = None,
    clock: Clock = time.time,
) -> bytes | None:
    """GET a file's bytes (archives, listings); None on 404.

    Transport failures, 5xx and the venue's ``retry_statuses`` are retried with jittered
    backoff, or after a checked ``Retry-After`` (finite, >= 0, clamped); one longer than
    ``rest.max_wait_seconds`` raises ``RateLimitedError``. Any other status raises
    ``ExchangeError`` at once. Every wait is appended to ``sleeps``.
    """
    attempt = 0
    while True:
        resp: requests.Response | None = None
        try:
            resp = fetch(session, url, timeout=rest.timeout_seconds, deadline=rest.deadline_seconds)
        except TransportError as exc:  # typed: truncated, undecodable, timeout, deadline
            what = str(exc)
        else:
            status = resp.status_code
            if status == 200:
                return resp.content
            if status == 404:
                return None
            if status not in retry_statuses and status < 500:
                raise ExchangeError(f"GET {url}: HTTP {status}", status=status)
            what = f"GET {url}: HTTP {status}"
        status = None if resp is None else resp.status_code
        if attempt >= rest.max_retries:
            raise ExchangeError(f"{what}; giving up after {attempt} retries", status=status)
        delay = backoff_delay(attempt, rest.backoff_base_seconds, rest.backoff_max_seconds, rng)
        retry_after = None if resp is None else retry_after_seconds(resp.headers, clock())
        if retry_after is not None:
            if retry_after > rest.max_wait_seconds:
                raise RateLimitedError(
                    f"{what} with Retry-After {retry_after:.0f}s, more than the "
                    f"{rest.max_wait_seconds:.0f}s a run may wait; failing instead",
                    wait_seconds=retry_after,
                    status=status,
                )
            delay = retry_after
        log.warning("%s; retry %d in %.2fs", what, attempt + 1, delay)
        if sleeps is not None:
            sleeps.append(delay)
        sleep(delay)
        attempt += 1
