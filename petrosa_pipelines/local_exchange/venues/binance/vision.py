"""A Binance-Vision-style archive tree over the deterministic market.

Serves what ``https://data.binance.vision`` serves for USD-M futures, byte-for-byte in layout:
``data/futures/um/{daily,monthly}/klines/<SYM>/<interval>/<SYM>-<interval>-<period>.zip``,
``.../aggTrades/<SYM>/<SYM>-aggTrades-<period>.zip`` and
``.../monthly/fundingRate/<SYM>/<SYM>-fundingRate-<YYYY-MM>.zip``, each with a
``<name>.zip.CHECKSUM`` (``"<sha256>  <name>.zip\\n"``), plus an S3 ``ListBucketResult`` listing.

Local extension (not on real Vision, which publishes funding monthly only):
``data/futures/um/daily/fundingRate/<SYM>/<SYM>-fundingRate-<YYYY-MM-DD>.zip``, so daily
partitions can be reconciled against an archive too.

Only closed periods exist: a day once the clock has passed it, a month once all its days have.
Zips are deterministic (fixed member timestamps), so a CHECKSUM is stable across requests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from xml.sax.saxutils import escape

from petrosa_pipelines.local_exchange.faults import Faults
from petrosa_pipelines.local_exchange.units import (
    DAY_MS,
    INTERVALS_MS,
    day_start_ms,
    fmt_fixed,
    stable_hash,
    to_date,
)
from petrosa_pipelines.local_exchange.venues.binance.frames import KLINE_COLUMNS, BinanceMarket

ROOT = "data/futures/um"
KINDS = ("aggTrades", "fundingRate", "klines")
AGG_TRADES_HEADER = (
    "agg_trade_id",
    "price",
    "quantity",
    "first_trade_id",
    "last_trade_id",
    "transact_time",
    "is_buyer_maker",
)
FUNDING_HEADER = ("calc_time", "funding_interval_hours", "last_funding_rate")

_SYM = r"(?P<sym>[A-Z0-9]+)"
_PERIOD = r"(?P<period>\d{4}-\d{2}(?:-\d{2})?)"
_PATH_RE = re.compile(
    rf"^{ROOT}/(?P<freq>daily|monthly)/"
    rf"(?:klines/{_SYM}/(?P<iv>\w+)/(?P=sym)-(?P=iv)-{_PERIOD}"
    rf"|(?P<kind>aggTrades|fundingRate)/(?P<sym2>[A-Z0-9]+)/(?P=sym2)-(?P=kind)-(?P<period2>[\d-]+))"
    r"\.zip(?P<checksum>\.CHECKSUM)?$"
)


@dataclass(frozen=True)
class ArchiveFile:
    """One archive: its dataset, symbol, interval (klines only) and period."""

    kind: str
    freq: str  # "daily" | "monthly"
    symbol: str
    period: str  # YYYY-MM-DD or YYYY-MM
    interval: str | None = None

    @property
    def name(self) -> str:
        label = self.interval if self.kind == "klines" else self.kind
        return f"{self.symbol}-{label}-{self.period}.zip"

    @property
    def key(self) -> str:
        sub = f"{self.symbol}/{self.interval}" if self.kind == "klines" else self.symbol
        return f"{ROOT}/{self.freq}/{self.kind}/{sub}/{self.name}"

    def days(self) -> list[dt.date]:
        if self.freq == "daily":
            return [dt.date.fromisoformat(self.period)]
        first = dt.date.fromisoformat(self.period + "-01")
        nxt = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return [first + dt.timedelta(days=i) for i in range((nxt - first).days)]


def parse_key(key: str) -> tuple[ArchiveFile, bool] | None:
    """(file, is_checksum) for an archive key, None when the key is not an archive name."""
    m = _PATH_RE.match(key)
    if not m:
        return None
    freq = m["freq"]
    if m["sym"]:
        f = ArchiveFile("klines", freq, m["sym"], m["period"], m["iv"])
    else:
        f = ArchiveFile(m["kind"], freq, m["sym2"], m["period2"])
    want = r"\d{4}-\d{2}-\d{2}" if freq == "daily" else r"\d{4}-\d{2}"
    if not re.fullmatch(want, f.period):
        return None
    try:
        f.days()
    except ValueError:
        return None
    return f, bool(m["checksum"])


class VisionArchive:
    """The archive tree of one market, as seen at the clock's current time."""

    def __init__(
        self, market: BinanceMarket, now_ms: Callable[[], int], faults: Faults | None = None
    ):
        self.market = market
        self.now_ms = now_ms
        self.faults = faults or Faults()
        self._zip = lru_cache(maxsize=64)(self._build_zip)

    # -- existence -------------------------------------------------------------------------

    def _today(self) -> dt.date:
        return to_date(self.now_ms())

    def exists(self, f: ArchiveFile) -> bool:
        """Published = a configured symbol/interval, on or after the start, fully closed."""
        if f.symbol not in self.market.specs:
            return False
        if f.kind == "klines" and f.interval not in INTERVALS_MS:
            return False
        if f.kind == "fundingRate" and f.interval is not None:
            return False
        days = f.days()
        return days[-1] >= self.market.start and days[-1] < self._today()

    def files(self, kind: str, freq: str, symbol: str, interval: str | None) -> list[ArchiveFile]:
        """Every published file of one directory, in key order."""
        start, today = self.market.start, self._today()
        out = []
        if freq == "daily":
            day = start
            while day < today:
                out.append(ArchiveFile(kind, freq, symbol, day.isoformat(), interval))
                day += dt.timedelta(days=1)
        else:
            month = start.replace(day=1)
            while True:
                f = ArchiveFile(kind, freq, symbol, month.strftime("%Y-%m"), interval)
                if not self.exists(f):
                    break
                out.append(f)
                month = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return out

    # -- content ---------------------------------------------------------------------------

    def header_for(self, f: ArchiveFile) -> bool:
        mode = self.market.config.vision_headers
        if mode == "mixed":
            return stable_hash(self.market.config.seed, f.key) % 5 != 0
        return mode == "always"

    def csv_bytes(self, f: ArchiveFile) -> bytes:
        """The CSV inside the zip, exactly as Vision lays it out."""
        lines: list[str] = []
        m = self.market
        if f.kind == "klines":
            if self.header_for(f):
                lines.append(",".join(KLINE_COLUMNS))
            for day in f.days():
                t0 = day_start_ms(day)
                rows = m.kline_rows(f.symbol, f.interval or "1m", t0, t0 + DAY_MS - 1)
                lines.extend(",".join(str(v) for v in row) for row in rows)
        elif f.kind == "aggTrades":
            if self.header_for(f):
                lines.append(",".join(AGG_TRADES_HEADER))
            spec = m.spec(f.symbol)
            for day in f.days():
                t = m.day_trades(f.symbol, day)
                lines.extend(
                    f"{a},{fmt_fixed(p, spec.price_decimals)},{fmt_fixed(q, spec.qty_decimals)},"
                    f"{fi},{li},{tt},{'true' if mk else 'false'}"
                    for a, p, q, fi, li, tt, mk in t.rows()
                )
        else:
            if self.header_for(f):
                lines.append(",".join(FUNDING_HEADER))
            days = f.days()
            t0, t1 = day_start_ms(days[0]), day_start_ms(days[-1]) + DAY_MS - 1
            for ft in m.funding_times(t0, t1):
                lines.append(f"{ft},8,{fmt_fixed(m.funding_rate_e8(f.symbol, ft), 8)}")
        return ("\n".join(lines) + "\n").encode() if lines else b""

    def _build_zip(self, f: ArchiveFile) -> bytes:
        buf = io.BytesIO()
        published = f.days()[-1] + dt.timedelta(days=1)
        info = zipfile.ZipInfo(
            f.name[:-4] + ".csv", date_time=(*published.timetuple()[:3], 0, 5, 0)
        )
        info.compress_type = zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(info, self.csv_bytes(f))
        return buf.getvalue()

    def zip_bytes(self, f: ArchiveFile) -> bytes:
        return self._zip(f)

    def checksum_text(self, f: ArchiveFile) -> str:
        digest = hashlib.sha256(self.zip_bytes(f)).hexdigest()
        if self.faults.bad_checksum:
            digest = hashlib.sha256(digest.encode()).hexdigest()
        return f"{digest}  {f.name}\n"

    def get(self, key: str) -> tuple[int, bytes, str]:
        """(status, body, content type) for a key under the archive root."""
        parsed = parse_key(key)
        if parsed is None or not self.exists(parsed[0]):
            return 404, _NO_SUCH_KEY.format(key=escape(key)).encode(), "application/xml"
        f, is_checksum = parsed
        if is_checksum:
            return 200, self.checksum_text(f).encode(), "binary/octet-stream"
        return 200, self.zip_bytes(f), "application/zip"

    # -- listing ---------------------------------------------------------------------------

    def children(self, parts: list[str]) -> list[str]:
        """Entries of one virtual directory: names ending in "/" are directories."""
        root = ROOT.split("/")
        if len(parts) < len(root):
            return [root[len(parts)] + "/"] if parts == root[: len(parts)] else []
        if parts[: len(root)] != root:
            return []
        rest = parts[len(root) :]
        symbols = sorted(self.market.specs)
        if not rest:
            return ["daily/", "monthly/"]
        freq = rest[0]
        if freq not in ("daily", "monthly"):
            return []
        if len(rest) == 1:
            return [k + "/" for k in KINDS]
        kind = rest[1]
        if kind not in KINDS:
            return []
        if len(rest) == 2:
            return [s + "/" for s in symbols]
        if rest[2] not in self.market.specs:
            return []
        return self._leaf_children(kind, freq, rest[2:])

    def _leaf_children(self, kind: str, freq: str, rest: list[str]) -> list[str]:
        """Below ``<kind>/<SYM>/``: interval directories (klines) or the archive files."""
        if kind == "klines":
            if len(rest) == 1:
                return sorted(iv + "/" for iv in INTERVALS_MS)
            if len(rest) != 2 or rest[1] not in INTERVALS_MS:
                return []
            files = self.files(kind, freq, rest[0], rest[1])
        elif len(rest) == 1:
            files = self.files(kind, freq, rest[0], None)
        else:
            return []
        return [n for f in files for n in (f.name, f.name + ".CHECKSUM")]

    def _walk(self, parts: list[str]) -> Iterator[str]:
        for entry in self.children(parts):
            if entry.endswith("/"):
                yield from self._walk([*parts, entry[:-1]])
            else:
                yield "/".join([*parts, entry])

    def list_objects(
        self, prefix: str = "", delimiter: str = "", marker: str = "", max_keys: int = 1000
    ) -> bytes:
        """An S3 ``ListBucketResult`` (ListObjects v1) for ``prefix``.

        ``Size``/``ETag`` are given for ``.CHECKSUM`` objects only: a zip's size is known only
        after building it, and listings must stay cheap.
        """
        head, _, partial = prefix.rpartition("/")
        parts = head.split("/") if head else []
        base = head + "/" if head else ""
        keys: list[str] = []
        prefixes: list[str] = []
        for entry in self.children(parts):
            if not entry.startswith(partial):
                continue
            if entry.endswith("/"):
                if delimiter == "/":
                    prefixes.append(base + entry)
                else:
                    keys.extend(self._walk([*parts, entry[:-1]]))
            else:
                keys.append(base + entry)
        items = sorted([(k, False) for k in keys] + [(p, True) for p in prefixes])
        items = [it for it in items if it[0] > marker]
        truncated = len(items) > max_keys
        items = items[:max_keys]
        out = [
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
            "<Name>data.binance.vision</Name>",
            f"<Prefix>{escape(prefix)}</Prefix>",
            f"<Marker>{escape(marker)}</Marker>",
            f"<MaxKeys>{max_keys}</MaxKeys>",
        ]
        if delimiter:
            out.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
        out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if truncated and items:
            out.append(f"<NextMarker>{escape(items[-1][0])}</NextMarker>")
        for key, is_prefix in items:
            if is_prefix:
                out.append(f"<CommonPrefixes><Prefix>{escape(key)}</Prefix></CommonPrefixes>")
            else:
                out.append(self._contents(key))
        out.append("</ListBucketResult>")
        return "".join(out).encode()

    def _contents(self, key: str) -> str:
        parsed = parse_key(key)
        modified = ""
        size = ""
        if parsed is not None:
            f, is_checksum = parsed
            published = f.days()[-1] + dt.timedelta(days=1)
            modified = f"<LastModified>{published.isoformat()}T00:05:00.000Z</LastModified>"
            if is_checksum:
                size = f"<Size>{64 + 2 + len(f.name) + 1}</Size>"
        return (
            f"<Contents><Key>{escape(key)}</Key>{modified}{size}"
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )


_NO_SUCH_KEY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
    "<Message>The specified key does not exist.</Message><Key>{key}</Key></Error>"
)
