"""Bybit's daily order-book history files, over the local market.

Live, ``quote-saver.bycsi.com/orderbook/linear/<SYM>/<YYYY-MM-DD>_<SYM>_ob200.data.zip`` (ob500
in older files; https://www.bybit.com/derivatives/en/history-data): one zip member
``<YYYY-MM-DD>_<SYM>_ob200.data`` of JSON lines ending CRLF (the last line too), the day's
snapshot then one delta per book change, each line the websocket ``orderbook`` message (keys
``topic,type,ts,data{s,b,a,u,seq},cts``; quirk 30 of the shared data's PROVENANCE, as in
petrosa_pipelines_tests/fixtures/bybit/historical_orderbook/2024-12-01_XRPUSDT_ob500.data).

Here the lines are the very messages the local websocket sends on ``orderbook.200.<SYM>``
(``BybitFormats.book_message`` and ``book_deltas``): the snapshot of the day's first book step,
then a delta for every later step of the day, ``u`` numbered as the book service numbers it;
a book-service restart (``Faults.restart_book_service``) during the day is a snapshot with
``u`` = 1 in the file, as on the websocket. So the file and the websocket agree on every level,
``ts``, ``cts``, ``u`` and ``seq``. Served under the archive base URL (the book host is the
trade archive's host locally: ``exchanges.bybit.archive.BybitArchiveClient``), for closed days
only (a file is made once, after its day closed), never for an ``unpublished`` (symbol, day).

A day's file takes seconds to build (``book_file.py``), so it is never built on the server's
event loop, which would freeze every websocket and REST answer meanwhile: a worker thread builds
it, requests for a file being built wait for that one build, and the few most recent files stay
in memory (bounded by count and bytes).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from petrosa_pipelines.local_exchange.venues.bybit.book_file import DEPTH, book_history_zip
from petrosa_pipelines.local_exchange.venues.bybit.frames import BybitFormats

PATH_RE = re.compile(
    r"^/orderbook/linear/(?P<sym>[A-Z0-9]+)/(?P<day>\d{4}-\d{2}-\d{2})_(?P=sym)_ob(?P<depth>\d+)"
    r"\.data\.zip$"
)
#: files kept in memory, and their bytes at most (a 100-level, 1 s-step day is ~23 MB)
MAX_FILES = 4
MAX_BYTES = 512 * 2**20
#: builds at once (each holds a day's file and a block's arrays)
WORKERS = 2

#: (symbol, day): one file
Key = tuple[str, dt.date]
#: what builds a file: (formats, symbol, day, u of a step, restart steps) -> zip bytes
Builder = Callable[[BybitFormats, str, dt.date, Callable[[int], int], Iterable[int]], bytes]


class BookArchive:
    """``/orderbook/linear/...`` of one server: closed days since the market's start."""

    def __init__(
        self,
        formats: BybitFormats,
        u_of: Callable[[int], int],
        published_days: Callable[[], list[dt.date]],
        restarts: Callable[[], Iterable[int]] = tuple,
        *,
        build: Builder = book_history_zip,
        max_files: int = MAX_FILES,
        max_bytes: int = MAX_BYTES,
    ):
        self.formats, self.u_of, self.published_days = formats, u_of, published_days
        self.restarts, self.build = restarts, build
        self.max_files, self.max_bytes = max_files, max_bytes
        #: (symbol, day) files withheld, as a day Bybit has not published (yet)
        self.unpublished: set[Key] = set()
        #: files built, most recently used last; builds under way (each awaited by its requests)
        self.files: OrderedDict[Key, bytes] = OrderedDict()
        self._building: dict[Key, asyncio.Future[bytes]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def owns(self, path: str) -> bool:
        return path.startswith("/orderbook/")

    def key(self, path: str) -> Key | None:
        """The (symbol, day) of the file at ``path``; None when there is none (HTTP 404)."""
        m = PATH_RE.match(path)
        if m is None or int(m["depth"]) != DEPTH or m["sym"] not in self.formats.market.specs:
            return None
        try:
            day = dt.date.fromisoformat(m["day"])
        except ValueError:
            return None
        if day not in self.published_days() or (m["sym"], day) in self.unpublished:
            return None
        return m["sym"], day

    async def fetch(self, path: str) -> bytes | None:
        """The file at ``path`` (None: HTTP 404), built in a worker thread the first time; a
        request for a file under way waits for that build (``shield``: a client that hangs up
        does not cancel it for the others)."""
        key = self.key(path)
        if key is None:
            return None
        if key in self.files:
            self.files.move_to_end(key)
            return self.files[key]
        building = self._building.get(key)
        if building is None:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="bybit-book-day")
            # the restart steps are read here, on the loop that changes them
            args = (self.formats, *key, self.u_of, tuple(self.restarts()))
            building = asyncio.get_running_loop().run_in_executor(self._pool, self.build, *args)
            self._building[key] = building
            building.add_done_callback(lambda done, key=key: self._built(key, done))
        return await asyncio.shield(building)

    def _built(self, key: Key, done: asyncio.Future[bytes]) -> None:
        """Keep a finished file (on the loop), dropping the least recently used past the bounds;
        a file larger than ``max_bytes`` alone is served but not kept."""
        del self._building[key]
        if done.cancelled() or done.exception() is not None:
            return
        data = done.result()
        if len(data) <= self.max_bytes:
            self.files[key] = data
        while len(self.files) > self.max_files or self.kept_bytes > self.max_bytes:
            self.files.popitem(last=False)

    @property
    def kept_bytes(self) -> int:
        return sum(map(len, self.files.values()))


__all__ = ["PATH_RE", "BookArchive", "Builder"]
