"""Warehouse tables (SQLAlchemy Core) and the ordered migrations that create and upgrade them.

The market-data tables are derived from the catalog (``catalog/schemas.py``) so a column is
declared once. A catalog change therefore changes the metadata here, and the drift test
(migrated database == metadata) fails until a migration brings existing databases along:
schema changes are never applied ad hoc.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from petrosa_pipelines.catalog.schemas import (
    CANDLES,
    DEPTH,
    FUNDING,
    LEVELS,
    TRADES,
    TS,
    DatasetSchema,
)
from petrosa_pipelines.serving.pgcopy import CopyColumn, Kind

SCHEMA = "petrosa"
metadata = sa.MetaData(schema=SCHEMA)

_SA_TYPES: dict[Kind, sa.types.TypeEngine] = {
    # byte-order collation: keys are ASCII, and index builds skip locale-aware comparison
    "text": sa.Text(collation="C"),
    "int8": sa.BigInteger(),
    "float8": pg.DOUBLE_PRECISION(),
    "bool": sa.Boolean(),
    "timestamptz": sa.TIMESTAMP(timezone=True),
    "date": sa.Date(),
    "jsonb": pg.JSONB(),
    # depth's levels: one array per side and measure, so a snapshot stays one row
    "float8[]": pg.ARRAY(pg.DOUBLE_PRECISION()),
}
_ARROW_KINDS: dict[pa.DataType, Kind] = {
    pa.string(): "text",
    pa.int64(): "int8",
    pa.float64(): "float8",
    pa.bool_(): "bool",
    TS: "timestamptz",
    LEVELS: "float8[]",
}


@dataclass(frozen=True)
class TableSpec:
    """A warehouse table and what a partition of it is.

    A partition is (exchange, symbol, [qualifier], UTC day of ``time_column``); the qualifier
    is the candle interval or the analytics name, so a day of 1m candles and a day of 1h
    candles are separate partitions of one table.
    """

    name: str
    columns: tuple[CopyColumn, ...]
    natural_key: tuple[str, ...]
    time_column: str
    qualifier_column: str | None = None
    #: extra (exchange, symbol, time) index when the natural key does not serve time ranges
    time_index: bool = False
    #: whether the table becomes a TimescaleDB hypertable when the extension exists
    hypertable: bool = True
    #: row order of reads after time (default: the natural key); trades: the numeric id
    order_after_time: tuple[str, ...] = ()

    @property
    def sort_columns(self) -> list[str]:
        """Time, then ``order_after_time`` or the natural key (as the lake orders rows)."""
        rest = self.order_after_time or self.natural_key
        return [self.time_column, *[k for k in rest if k != self.time_column]]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def qualified_name(self) -> str:
        return f"{SCHEMA}.{self.name}"


def _from_catalog(schema: DatasetSchema, *, qualifier: str | None = None, time_index=False):
    cols = tuple(CopyColumn(c.name, _ARROW_KINDS[c.type], c.nullable) for c in schema.columns)
    return TableSpec(
        name=schema.name,
        columns=cols,
        natural_key=schema.natural_key,
        time_column=schema.time_column,
        qualifier_column=qualifier,
        time_index=time_index,
        order_after_time=schema.order_after_time or (),
    )


ANALYTICS = TableSpec(
    name="analytics",
    columns=(
        CopyColumn("name", "text"),
        CopyColumn("exchange", "text"),
        CopyColumn("symbol", "text"),
        CopyColumn("ts", "timestamptz"),
        CopyColumn("metric", "text"),
        CopyColumn("value", "float8", nullable=True),
    ),
    natural_key=("name", "exchange", "symbol", "metric", "ts"),
    time_column="ts",
    qualifier_column="name",
)
HEALTH = TableSpec(
    name="health",
    columns=(
        CopyColumn("exchange", "text"),
        CopyColumn("symbol", "text"),
        CopyColumn("dataset", "text"),
        CopyColumn("day", "timestamptz"),
        CopyColumn("score", "float8", nullable=True),
        CopyColumn("completeness", "float8", nullable=True),
        CopyColumn("validity", "float8", nullable=True),
        CopyColumn("consistency", "float8", nullable=True),
        CopyColumn("freshness", "float8", nullable=True),
        CopyColumn("details", "jsonb", nullable=True),
        CopyColumn("evaluated_at", "timestamptz", nullable=True),
    ),
    natural_key=("exchange", "symbol", "dataset", "day"),
    time_column="day",
    hypertable=False,  # one row per dataset-day: small, and keyed without a time range
)
TABLE_SPECS: dict[str, TableSpec] = {
    "trades": _from_catalog(TRADES, time_index=True),
    "candles": _from_catalog(CANDLES, qualifier="interval"),
    "depth": _from_catalog(DEPTH),
    "funding": _from_catalog(FUNDING),
    "analytics": ANALYTICS,
    "health": HEALTH,
}


def _table(spec: TableSpec) -> sa.Table:
    cols = [sa.Column(c.name, _SA_TYPES[c.kind], nullable=c.nullable) for c in spec.columns]
    extras: list[sa.SchemaItem] = [
        sa.UniqueConstraint(*spec.natural_key, name=f"uq_{spec.name}_natural_key")
    ]
    if spec.time_index:
        extras.append(
            sa.Index(f"ix_{spec.name}_symbol_time", "exchange", "symbol", spec.time_column)
        )
    return sa.Table(spec.name, metadata, *cols, *extras)


TABLES: dict[str, sa.Table] = {name: _table(spec) for name, spec in TABLE_SPECS.items()}

#: which partitions are loaded, with counts: lets readers tell "loaded and empty" from "missing"
loaded_partitions = sa.Table(
    "loaded_partitions",
    metadata,
    sa.Column("table_name", sa.Text, primary_key=True),
    sa.Column("exchange", sa.Text, primary_key=True),
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("qualifier", sa.Text, primary_key=True),  # '' when the table has none
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("row_count", sa.BigInteger, nullable=False),
    sa.Column("min_time", sa.TIMESTAMP(timezone=True)),
    sa.Column("max_time", sa.TIMESTAMP(timezone=True)),
    sa.Column("loaded_at", sa.TIMESTAMP(timezone=True), nullable=False),
)
schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", sa.TIMESTAMP(timezone=True), nullable=False),
)


# -- TimescaleDB -----------------------------------------------------------------------------------
def hypertable_statements(spec: TableSpec) -> list[str]:
    """DDL turning ``spec``'s table into a hypertable chunked by UTC day.

    TimescaleDB requires every unique index to contain the time column. Only trades' natural
    key lacks it (trade_id determines trade_time), so there the constraint gains trade_time;
    partition replacement still prevents the same id landing twice.
    """
    if not spec.hypertable:
        return []
    out: list[str] = []
    if spec.time_column not in spec.natural_key:
        cols = ", ".join((*spec.natural_key, spec.time_column))
        out += [
            f"ALTER TABLE {spec.qualified_name} DROP CONSTRAINT uq_{spec.name}_natural_key",
            f"ALTER TABLE {spec.qualified_name} ADD CONSTRAINT uq_{spec.name}_natural_key "
            f"UNIQUE ({cols})",
        ]
    out.append(
        f"SELECT create_hypertable('{spec.qualified_name}', '{spec.time_column}', "
        "chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE, migrate_data => TRUE)"
    )
    return out


def timescale_available(conn: sa.Connection) -> bool:
    """Whether the server can load TimescaleDB (installed, not necessarily created)."""
    row = conn.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    ).first()
    return row is not None


# -- migrations ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[sa.Connection], str | None]  # returns a note for schema_version, if any


def _create(conn: sa.Connection, *tables: sa.Table) -> None:
    for table in tables:
        table.create(conn, checkfirst=False)


def _v1_market_data(conn: sa.Connection) -> None:
    _create(conn, *(TABLES[n] for n in ("trades", "candles", "depth", "funding")))
    _create(conn, loaded_partitions)


def _v2_analytics_health(conn: sa.Connection) -> None:
    _create(conn, TABLES["analytics"], TABLES["health"])


def _v3_timescale(conn: sa.Connection) -> str:
    if not timescale_available(conn):
        return "skipped: timescaledb extension not available, plain tables kept"
    conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
    for spec in TABLE_SPECS.values():
        for statement in hypertable_statements(spec):
            conn.execute(sa.text(statement))
    return "hypertables created"


def _is_hypertable(conn: sa.Connection, table: str) -> bool:
    """Whether ``table`` was made a hypertable (only asked where TimescaleDB is loaded)."""
    loaded = conn.execute(
        sa.text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    ).first()
    if loaded is None:
        return False
    row = conn.execute(
        sa.text(
            "SELECT 1 FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = :s AND hypertable_name = :t"
        ),
        {"s": SCHEMA, "t": table},
    ).first()
    return row is not None


def _v4_trade_ids(conn: sa.Connection) -> str:
    """Trades gain ``trade_id`` (the venue's own id) and are keyed by it.

    Rows loaded before it are Binance aggTrades, whose own id is the aggregate id: they get its
    decimal text, which is what the lake fills for v1 files too (``catalog.schemas``), so a
    reload of an old partition replaces its rows with identical ones.
    """
    spec = TABLE_SPECS["trades"]
    table = spec.qualified_name
    key = list(spec.natural_key)
    if _is_hypertable(conn, spec.name) and spec.time_column not in key:
        key.append(spec.time_column)  # TimescaleDB: every unique index holds the time column
    for statement in (
        # a database created at v4 already has it (v1 builds today's tables)
        f'ALTER TABLE {table} ADD COLUMN IF NOT EXISTS trade_id text COLLATE "C"',
        f"UPDATE {table} SET trade_id = agg_trade_id::text WHERE trade_id IS NULL",  # noqa: S608
        f"ALTER TABLE {table} ALTER COLUMN trade_id SET NOT NULL",
        f"ALTER TABLE {table} DROP CONSTRAINT uq_{spec.name}_natural_key",
        f"ALTER TABLE {table} ADD CONSTRAINT uq_{spec.name}_natural_key UNIQUE ({', '.join(key)})",
    ):
        conn.execute(sa.text(statement))
    return f"trades keyed by ({', '.join(key)})"


#: the columns only the version 1 (one row per level) depth table has
V1_DEPTH_COLUMNS = ("side", "level", "price", "quantity")


def depth_table_layout(conn: sa.Connection) -> str | None:
    """``"long"`` when ``petrosa.depth`` is the version 1 table (a row per level), ``"wide"``
    when it is a row per snapshot, None when there is no depth table."""
    insp = sa.inspect(conn)
    if not insp.has_table("depth", schema=SCHEMA):
        return None
    cols = {c["name"] for c in insp.get_columns("depth", schema=SCHEMA)}
    return "long" if set(V1_DEPTH_COLUMNS) <= cols else "wide"


def _v5_depth_wide(conn: sa.Connection) -> str:
    """Depth becomes one row per snapshot (catalog depth v2), converted in place.

    The level rows of each (exchange, symbol, snapshot_time) become its four arrays, ordered
    by level (best price first), as ``depth_layout.from_long`` turns a v1 lake file; a side
    without levels gets an empty array. The ledger's depth row counts become snapshot counts,
    so ``never_fewer`` keeps comparing like with like. The old table is renamed aside, the new
    one created from the metadata (a hypertable again where the old one was), filled, and the
    old one dropped, all in this migration's transaction.
    """
    if depth_table_layout(conn) != "long":
        return "depth already one row per snapshot"  # a database created at v5 (v1 builds it)
    spec = TABLE_SPECS["depth"]
    table = spec.qualified_name
    hyper = _is_hypertable(conn, spec.name)
    conn.execute(sa.text(f"ALTER TABLE {table} DROP CONSTRAINT uq_{spec.name}_natural_key"))
    conn.execute(sa.text(f"ALTER TABLE {table} RENAME TO {spec.name}_v1"))
    _create(conn, TABLES[spec.name])
    if hyper:
        for statement in hypertable_statements(spec):
            conn.execute(sa.text(statement))

    def levels(side: str, measure: str) -> str:
        return (
            f"COALESCE(array_agg({measure} ORDER BY level) FILTER (WHERE side = '{side}'), "
            "'{}'::float8[])"
        )

    filled = conn.execute(
        sa.text(
            f"""INSERT INTO {table} ({", ".join(spec.column_names)})
            SELECT exchange, symbol, snapshot_time, min(last_update_id),
                   {levels("bid", "price")}, {levels("bid", "quantity")},
                   {levels("ask", "price")}, {levels("ask", "quantity")},
                   min(source), max(received_at)
            FROM {table}_v1 GROUP BY exchange, symbol, snapshot_time"""  # noqa: S608
        )
    ).rowcount
    conn.execute(
        sa.text(
            f"""UPDATE {SCHEMA}.loaded_partitions lp SET row_count = (
                SELECT count(*) FROM {table} d
                WHERE d.exchange = lp.exchange AND d.symbol = lp.symbol
                  AND d.snapshot_time >= lp.day::timestamp AT TIME ZONE 'UTC'
                  AND d.snapshot_time < (lp.day + 1)::timestamp AT TIME ZONE 'UTC')
            WHERE lp.table_name = 'depth'"""  # noqa: S608
        )
    )
    conn.execute(sa.text(f"DROP TABLE {table}_v1"))
    return f"depth converted: {filled} snapshot rows" + (", hypertable" if hyper else "")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "market data tables and partition ledger", _v1_market_data),
    Migration(2, "analytics and health tables", _v2_analytics_health),
    Migration(3, "TimescaleDB hypertables when the extension is available", _v3_timescale),
    Migration(4, "trades keyed by the venue's own trade id (trade_id)", _v4_trade_ids),
    Migration(5, "depth one row per snapshot, levels as arrays (depth v2)", _v5_depth_wide),
)
LATEST_VERSION = MIGRATIONS[-1].version
