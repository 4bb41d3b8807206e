"""The PostgreSQL warehouse: versioned schema, atomic partition replacement by binary COPY.

A partition (table, exchange, symbol, [interval or analytics name], UTC day) is replaced in
ONE transaction: take a per-partition advisory lock, delete the partition's rows, COPY the new
rows in, record the load in ``loaded_partitions``, commit. MVCC means a reader sees the old
partition or the new one, never half; an error or a dropped connection mid-COPY rolls the
whole transaction back; loading the same frame twice leaves the same rows. Rows that do not
belong to the partition are rejected before anything is touched, so a replace can never
delete one partition and leave rows of another.

SQLAlchemy Core (``postgresql+psycopg``) defines the tables and builds queries; the COPY goes
through the underlying psycopg 3 connection of the same transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from petrosa_pipelines.catalog.schemas import DATASETS, conform
from petrosa_pipelines.serving import pgcopy
from petrosa_pipelines.serving.schema import (
    LATEST_VERSION,
    MIGRATIONS,
    SCHEMA,
    TABLE_SPECS,
    TABLES,
    TableSpec,
    loaded_partitions,
    schema_version,
)

#: advisory lock key serialising migrations across processes
_MIGRATION_LOCK = 0x70657472_6F736131


class WarehouseError(RuntimeError):
    """A warehouse operation that cannot proceed; the message says why."""


class PartitionMismatchError(ValueError):
    """A frame holds rows outside the partition it is loaded into."""


class ShrinkRefusedError(WarehouseError):
    """A load would replace a partition with fewer rows than it holds (``never_fewer``)."""


def normalise_url(url: str) -> str:
    """The SQLAlchemy URL with the psycopg 3 driver, whatever driver ``url`` named.

    Dagster's storage needs ``postgresql+psycopg2://`` (the SQLAlchemy pin in pyproject.toml);
    the same database URL may be given here, and the warehouse always talks psycopg 3.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise WarehouseError(f"the warehouse needs a PostgreSQL URL, got {parsed.drivername!r}")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same database as a plain ``postgresql://`` URL for ``psycopg.connect``."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


@dataclass(frozen=True)
class Partition:
    """One replaceable unit of a warehouse table."""

    table: str
    exchange: str
    symbol: str
    day: dt.date
    qualifier: str = ""

    def lock_key(self) -> int:
        """A stable signed 64-bit key for ``pg_advisory_xact_lock``."""
        text = f"{self.table}|{self.exchange}|{self.symbol}|{self.qualifier}|{self.day}"
        digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True)
class LoadReport:
    partition: Partition
    rows: int
    replaced_rows: int
    seconds: float


def _check_partition(spec: TableSpec, frame: pd.DataFrame, part: Partition) -> None:
    """Reject frames with columns missing or rows outside ``part`` (vectorised)."""
    missing = [c for c in spec.column_names if c not in frame.columns]
    if missing:
        raise PartitionMismatchError(f"{spec.name}: frame lacks columns {missing}")
    if frame.empty:
        return
    expected = {"exchange": part.exchange, "symbol": part.symbol}
    if spec.qualifier_column:
        expected[spec.qualifier_column] = part.qualifier
    for col, value in expected.items():
        bad = frame[col].ne(value).fillna(True).to_numpy(dtype=bool)
        if bad.any():
            other = frame[col][bad].iloc[0]
            raise PartitionMismatchError(
                f"{spec.name} partition {part}: {int(bad.sum())} rows have {col}={other!r}"
            )
    start, end = day_bounds(part.day)
    times = pd.to_datetime(frame[spec.time_column], utc=True)
    outside = (times < start) | (times >= end) | times.isna()
    if outside.any():
        raise PartitionMismatchError(
            f"{spec.name} partition {part}: {int(outside.sum())} rows have {spec.time_column} "
            f"outside [{start.isoformat()}, {end.isoformat()}) (first: {times[outside].iloc[0]})"
        )


def _qualifier(spec: TableSpec, frame: pd.DataFrame, qualifier: str | None) -> str:
    if spec.qualifier_column is None:
        if qualifier:
            raise WarehouseError(f"table {spec.name} has no qualifier; got {qualifier!r}")
        return ""
    if qualifier:
        return qualifier
    values = frame[spec.qualifier_column].unique() if len(frame) else []
    if len(values) != 1:
        raise WarehouseError(
            f"table {spec.name}: pass {spec.qualifier_column}= explicitly "
            f"(the frame holds {list(values)[:5]})"
        )
    return str(values[0])


class Warehouse:
    """The warehouse at ``url``; create once per process and share (pooled, thread-safe)."""

    def __init__(self, url: str, *, pool_size: int = 5):
        self.url = normalise_url(url)
        self.engine = sa.create_engine(self.url, pool_size=pool_size, pool_pre_ping=True)
        self._schema_checked = False

    def dispose(self) -> None:
        self.engine.dispose()

    # -- schema ------------------------------------------------------------------------------------
    def version(self) -> int:
        """The schema version of the database (0 when never migrated)."""
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("schema_version", schema=SCHEMA):
                return 0
            return int(conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0)

    def migrate(self) -> int:
        """Apply pending migrations in order, each in its own transaction; return the version.

        An advisory lock makes concurrent callers (several run workers starting at once) wait
        for each other; a database newer than this code is refused rather than written to.
        """
        with self.engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
            schema_version.create(conn, checkfirst=True)
        current = self.version()
        if current > LATEST_VERSION:
            raise WarehouseError(
                f"warehouse schema is at version {current}, newer than this code "
                f"({LATEST_VERSION}); upgrade petrosa_pipelines before loading"
            )
        for migration in MIGRATIONS:
            with self.engine.begin() as conn:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
                done = conn.execute(
                    sa.select(schema_version.c.version).where(
                        schema_version.c.version == migration.version
                    )
                ).first()
                if done:
                    continue
                note = migration.apply(conn)
                conn.execute(
                    schema_version.insert().values(
                        version=migration.version,
                        description=migration.description + (f" ({note})" if note else ""),
                        applied_at=dt.datetime.now(tz=dt.UTC),
                    )
                )
        self._schema_checked = self.version() == LATEST_VERSION
        return self.version()

    def _require_schema(self) -> None:
        if self._schema_checked:
            return
        version = self.version()
        if version != LATEST_VERSION:
            pending = "; ".join(
                f"{m.version}: {m.description}" for m in MIGRATIONS if m.version > version
            )
            raise WarehouseError(
                f"warehouse schema is at version {version}, this code needs {LATEST_VERSION}"
                + (f" (pending: {pending})" if pending else "")
                + ": call Warehouse.migrate() (the resource does it when auto_migrate is on)"
            )
        self._schema_checked = True

    # -- loads -------------------------------------------------------------------------------------
    def load_partition(
        self,
        table: str,
        frame: pd.DataFrame,
        *,
        exchange: str,
        symbol: str,
        day: dt.date,
        qualifier: str | None = None,
        never_fewer: bool = False,
    ) -> LoadReport:
        """Replace one partition with ``frame`` atomically; the frame is the whole partition.

        With ``never_fewer`` a frame with fewer rows than the partition holds is refused inside
        the same transaction (``ShrinkRefusedError``): the partition keeps its rows.
        """
        spec = TABLE_SPECS.get(table)
        if spec is None:
            raise WarehouseError(f"unknown warehouse table {table!r}; known: {sorted(TABLE_SPECS)}")
        part = Partition(table, exchange, symbol, day, _qualifier(spec, frame, qualifier))
        _check_partition(spec, frame, part)
        self._require_schema()
        started = time.perf_counter()
        start, end = day_bounds(day)
        where = "exchange = %s AND symbol = %s"
        params: list[object] = [exchange, symbol]
        if spec.qualifier_column:
            where += f' AND "{spec.qualifier_column}" = %s'
            params.append(part.qualifier)
        where += f' AND "{spec.time_column}" >= %s AND "{spec.time_column}" < %s'
        params += [start, end]
        columns = ", ".join(f'"{c}"' for c in spec.column_names)
        times = pd.to_datetime(frame[spec.time_column], utc=True) if len(frame) else None
        with self.engine.connect() as sconn, sconn.begin():
            conn: psycopg.Connection = sconn.connection.driver_connection  # type: ignore[assignment]
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", [part.lock_key()])
                if never_fewer:
                    cur.execute(f"SELECT count(*) FROM {spec.qualified_name} WHERE {where}", params)  # noqa: S608
                    held = int(cur.fetchone()[0])
                    if len(frame) < held:
                        raise ShrinkRefusedError(
                            f"{spec.name} partition {part}: refusing to replace {held} rows "
                            f"with {len(frame)}; the warehouse keeps its rows"
                        )
                cur.execute(f"DELETE FROM {spec.qualified_name} WHERE {where}", params)  # noqa: S608
                replaced = cur.rowcount
                with cur.copy(
                    f"COPY {spec.qualified_name} ({columns}) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    for chunk in pgcopy.encode_frame(frame, spec.columns):
                        copy.write(chunk)
                self._record_load(
                    cur,
                    part,
                    len(frame),
                    times.min() if times is not None else None,
                    times.max() if times is not None else None,
                )
        return LoadReport(part, len(frame), replaced, time.perf_counter() - started)

    @staticmethod
    def _record_load(cur: psycopg.Cursor, part: Partition, rows: int, lo, hi) -> None:
        cur.execute(
            f"""INSERT INTO {SCHEMA}.loaded_partitions
                (table_name, exchange, symbol, qualifier, day, row_count, min_time, max_time,
                 loaded_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
                ON CONFLICT (table_name, exchange, symbol, qualifier, day) DO UPDATE SET
                  row_count = EXCLUDED.row_count, min_time = EXCLUDED.min_time,
                  max_time = EXCLUDED.max_time, loaded_at = EXCLUDED.loaded_at""",  # noqa: S608
            [part.table, part.exchange, part.symbol, part.qualifier, part.day, rows, lo, hi],
        )

    def load_analytics(
        self,
        name: str,
        frame: pd.DataFrame,
        *,
        exchange: str,
        symbol: str,
        day: dt.date,
        time_column: str | None = None,
    ) -> LoadReport:
        """Replace one analytics partition; the wide frame is stored long (metric, value)."""
        long = analytics_to_long(
            name, frame, exchange=exchange, symbol=symbol, time_column=time_column
        )
        return self.load_partition(
            "analytics", long, exchange=exchange, symbol=symbol, day=day, qualifier=name
        )

    # -- reads -------------------------------------------------------------------------------------
    def read(
        self,
        table: str,
        *,
        exchange: str,
        symbols: Sequence[str],
        start: dt.datetime,
        end: dt.datetime,
        qualifier: str | None = None,
    ) -> pd.DataFrame:
        """Rows of ``symbols`` with start <= time < end, sorted by time, symbol, then as the
        lake orders a partition.

        A database behind this code is refused (``WarehouseError`` naming the pending
        migrations) rather than read through table definitions it does not have yet: depth
        before migration 5 is a row per level, not the snapshot rows asked for.
        """
        self._require_schema()
        spec = TABLE_SPECS[table]
        t = TABLES[table]
        time_col = t.c[spec.time_column]
        arrays = [c.name for c in spec.columns if c.kind == "float8[]"]
        # arrays come as their binary form, decoded by numpy (``pgcopy.float8_array_cells``)
        selected = [
            sa.func.array_send(c, type_=sa.LargeBinary).label(c.name) if c.name in arrays else c
            for c in t.c
        ]
        stmt = sa.select(*selected).where(
            t.c.exchange == exchange,
            t.c.symbol.in_(list(symbols)),
            time_col >= start,
            time_col < end,
        )
        if spec.qualifier_column and qualifier:
            stmt = stmt.where(t.c[spec.qualifier_column] == qualifier)
        # the lake's row order after time (``TableSpec.sort_columns``): Binance trades of one
        # millisecond stay in numeric id order, which their text ``trade_id`` key would break
        stmt = stmt.order_by(time_col, t.c.symbol, *(t.c[k] for k in spec.sort_columns[1:]))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).fetchall()
        frame = pd.DataFrame.from_records(rows, columns=spec.column_names)
        for name in arrays:
            frame[name] = pgcopy.float8_array_cells(frame[name].tolist())
        if table in DATASETS:
            return conform(frame, DATASETS[table])
        for col in spec.columns:
            if col.kind == "timestamptz":
                frame[col.name] = pd.to_datetime(frame[col.name], utc=True).astype(
                    "datetime64[ms, UTC]"
                )
            elif col.kind == "float8":
                frame[col.name] = frame[col.name].astype("float64")
        return frame

    def loaded(
        self,
        table: str,
        *,
        exchange: str,
        symbols: Iterable[str],
        days: Iterable[dt.date],
        qualifier: str | None = None,
    ) -> dict[tuple[str, dt.date], int]:
        """{(symbol, day): row_count} of the partitions the ledger says are loaded."""
        lp = loaded_partitions
        stmt = sa.select(lp.c.symbol, lp.c.day, lp.c.row_count).where(
            lp.c.table_name == table,
            lp.c.exchange == exchange,
            lp.c.symbol.in_(list(symbols)),
            lp.c.day.in_(list(days)),
            lp.c.qualifier == (qualifier or ""),
        )
        with self.engine.connect() as conn:
            return {(r.symbol, r.day): int(r.row_count) for r in conn.execute(stmt)}

    def known_symbols(self, exchange: str) -> set[str]:
        """Every symbol with at least one loaded partition of any table."""
        lp = loaded_partitions
        stmt = sa.select(lp.c.symbol).where(lp.c.exchange == exchange).distinct()
        with self.engine.connect() as conn:
            return {r.symbol for r in conn.execute(stmt)}


_TIME_CANDIDATES = ("ts", "time", "open_time", "timestamp", "window_start", "date")


def analytics_to_long(
    name: str,
    frame: pd.DataFrame,
    *,
    exchange: str,
    symbol: str,
    time_column: str | None = None,
) -> pd.DataFrame:
    """A wide analytics frame (time + numeric metric columns) as (name, ..., metric, value).

    Why long: analytics change shape as estimators are added; one generic table keeps the
    warehouse schema stable and every metric queryable the same way.
    """
    if time_column is None:
        time_column = next((c for c in _TIME_CANDIDATES if c in frame.columns), None)
        if time_column is None:
            raise WarehouseError(
                f"analytics {name!r}: no time column among {_TIME_CANDIDATES}; pass time_column="
            )
    if "symbol" in frame.columns and len(frame) and (frame["symbol"] != symbol).any():
        raise PartitionMismatchError(f"analytics {name!r}: rows of other symbols than {symbol}")
    metrics = [
        c
        for c in frame.columns
        if c != time_column
        and pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
    ]
    n = len(frame)
    ts = pd.to_datetime(frame[time_column], utc=True).to_numpy()
    return pd.DataFrame(
        {
            "name": name,
            "exchange": exchange,
            "symbol": symbol,
            "ts": pd.to_datetime(np.tile(ts, len(metrics)), utc=True),
            "metric": np.repeat(np.array(metrics, dtype=object), n),
            "value": np.concatenate(
                [frame[m].to_numpy(dtype="float64", na_value=np.nan) for m in metrics]
            )
            if metrics
            else np.array([], dtype="float64"),
        }
    )


def analytics_to_wide(long: pd.DataFrame) -> pd.DataFrame:
    """The inverse of ``analytics_to_long`` for one name (columns: symbol, ts, metrics)."""
    if long.empty:
        return pd.DataFrame(
            {"symbol": pd.Series(dtype="string"), "ts": pd.Series(dtype="datetime64[ms, UTC]")}
        )
    wide = long.pivot_table(
        index=["symbol", "ts"], columns="metric", values="value", aggfunc="first", dropna=False
    ).reset_index()
    wide.columns.name = None
    return wide.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)
