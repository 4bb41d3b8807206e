"""The parquet lake as a Dagster IO manager: local directory by default, S3 when configured."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
import pandas as pd

from petrosa_pipelines.instruments import KEY_SEP, Instrument, parse_partition_key
from petrosa_pipelines.lake import Lake, LakeFile, S3Lake, lake_from_path, lake_path

ALL_SYMBOLS = "ALL"


def _key_parts(partition_key: str | None) -> tuple[str, Instrument | None]:
    """(date, instrument) of a partition key: ``date|instrument``, a bare date, or none.

    The instrument of a legacy bare key (``2024-05-01|BTCUSDT``) is Binance USD-M's, so it
    reads and writes the same file as ``2024-05-01|binance-usdm:BTCUSDT``.
    """
    if partition_key is None:
        return "1970-01-01", None
    if KEY_SEP in str(partition_key):
        day, inst = parse_partition_key(str(partition_key))  # a MultiPartitionKey is date|symbol
        return day.isoformat(), inst
    return str(partition_key), None


class LakeIOManager(dg.ConfigurableIOManager):
    """One parquet file per partition at ``{layer}/{dataset}/{exchange}/{symbol}/{date}``.

    ``exchange`` and ``symbol`` come from the partition's instrument (its venue's storage name:
    ``binance`` for ``binance-usdm``), so one asset holds every venue's partitions. Partitions
    without an instrument (by date alone: cross-symbol analytics) use the asset's ``exchange``
    metadata, else the ``exchange`` field, and the symbol ``ALL``.

    Loading several upstream partitions (rolling windows, cross-symbol assets) always hands
    over ONE frame sorted by time, never a dict or a bare frame depending on the count.
    """

    #: lake directory or s3://bucket/prefix (default: PETROSA_LAKE_PATH, else data/lake)
    base_path: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = "lake"
    s3_endpoint_url: str | None = None
    exchange: str = "binance"

    def lake(self) -> Lake:
        if self.s3_bucket:
            from dagster_aws.s3 import S3Resource

            client = S3Resource(endpoint_url=self.s3_endpoint_url).get_client()
            return S3Lake(client, self.s3_bucket, self.s3_prefix)
        return lake_from_path(self.base_path or os.environ.get("PETROSA_LAKE_PATH", "data/lake"))

    def _relpath(
        self, asset_key: dg.AssetKey, partition_key: str | None, exchange: str | None
    ) -> str:
        date, inst = _key_parts(partition_key)
        if inst is not None:
            return lake_path("/".join(asset_key.path), inst.exchange, inst.symbol, date)
        return lake_path("/".join(asset_key.path), exchange or self.exchange, ALL_SYMBOLS, date)

    def _exchange(self, metadata: Any) -> str:
        value = (metadata or {}).get("exchange")
        return str(getattr(value, "value", value) or self.exchange)

    def _legacy_exchange(self, metadata: Any) -> str | None:
        """Where a partition without an instrument was written before its asset's ``exchange``
        changed (``legacy_exchange`` metadata: cross-symbol analytics were ``binance``)."""
        value = (metadata or {}).get("legacy_exchange")
        value = getattr(value, "value", value)
        return str(value) if value else None

    def read_partition(
        self, asset_key: dg.AssetKey, partition_key: str | None, exchange: str | None = None
    ) -> pd.DataFrame | None:
        """The partition file as the lake holds it now, None when there is none.

        Assets that must never publish fewer rows than they already hold read it before
        replacing it (``market_data/assets.py``: ``refuse_to_shrink``).
        """
        relpath = self._relpath(asset_key, partition_key, exchange)
        try:
            return self.lake().read_frame(relpath)
        except FileNotFoundError:
            return None

    def kept_partition(
        self, asset_key: dg.AssetKey, partition_key: str | None, exchange: str | None = None
    ) -> LakeFile | None:
        """The partition file as the lake holds it now, unread (None when there is none): its
        row count from the file's footer, its columns read when asked.

        What a re-run keeps (``refuse_to_shrink`` needs only its row count; the previous
        source reads its keys, and its rows only where the new result lacks some), so a day
        of 10 M trades is not held beside the one being built, as ``read_partition`` would.
        """
        relpath = self._relpath(asset_key, partition_key, exchange)
        try:
            return self.lake().file(relpath)
        except FileNotFoundError:
            return None

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a DataFrame")
        exchange = self._exchange(context.definition_metadata)
        key = context.partition_key if context.has_partition_key else None
        relpath = self._relpath(context.asset_key, key, exchange)
        lake = self.lake()
        lake.write_frame(relpath, obj)
        context.add_output_metadata({"path": dg.MetadataValue.path(lake.uri(relpath))})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        upstream = context.upstream_output
        asset_key = context.asset_key
        exchange = self._exchange(upstream.definition_metadata if upstream else None)
        legacy = self._legacy_exchange(upstream.definition_metadata if upstream else None)
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions"))
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else [None]
        lake = self.lake()
        frames = []
        for key in keys:
            relpath = self._relpath(asset_key, key, exchange)
            try:
                frames.append(lake.read_frame(relpath))
                continue
            except FileNotFoundError:
                pass
            old = self._relpath(asset_key, key, legacy) if legacy else None
            if old is not None and old != relpath:  # a day written before the move, not rebuilt
                try:
                    frames.append(lake.read_frame(old))
                    context.log.info(f"partition {key}: read from its former path {old}")
                    continue
                except FileNotFoundError:
                    pass
            if not allow_missing:
                raise FileNotFoundError(relpath)
            context.log.warning(f"partition {key} of {asset_key.to_user_string()} is missing")
        frames = [f for f in frames if len(f.columns)]
        if not frames:
            return pd.DataFrame()
        out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        time_cols = [
            c
            for c in ("open_time", "trade_time", "snapshot_time", "funding_time", "date")
            if c in out.columns
        ]
        if time_cols:
            sort_cols = [time_cols[0], *(["symbol"] if "symbol" in out.columns else [])]
            out = out.sort_values(sort_cols, kind="stable").reset_index(drop=True)
        return out
