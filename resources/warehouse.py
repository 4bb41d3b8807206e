"""The PostgreSQL warehouse as a Dagster resource.

The URL is a secret: wire it as ``WarehouseResource(url=dg.EnvVar("PETROSA_WAREHOUSE_URL"))``.
Any PostgreSQL URL form works (``postgresql://``, ``+psycopg``, ``+psycopg2``): the warehouse
always uses psycopg 3, so the same database URL as Dagster's storage may be reused.
"""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from petrosa_pipelines.serving.warehouse import Warehouse
from petrosa_pipelines.settings import check_database_url

URL_VAR = "PETROSA_WAREHOUSE_URL"


class WarehouseResource(dg.ConfigurableResource):
    """Connection to the warehouse; migrates the schema when a run first uses it. Implements
    ``serving.ports.WarehousePort``."""

    url: str
    #: apply pending schema migrations at run start (off: fail if the schema is behind)
    auto_migrate: bool = True
    pool_size: int = 5

    _warehouse: Warehouse | None = PrivateAttr(default=None)

    def _connect(self) -> Warehouse:
        """The warehouse, after checking the URL ourselves: SQLAlchemy's parse errors are
        untyped and the URL carries the password (``SettingError`` masks it)."""
        return Warehouse(
            check_database_url(URL_VAR, self.url, "postgresql"), pool_size=self.pool_size
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._warehouse = self._connect()
        if self.auto_migrate:
            self._warehouse.migrate()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._warehouse is not None:
            self._warehouse.dispose()
            self._warehouse = None

    def warehouse(self) -> Warehouse:
        """The shared ``Warehouse`` (created on first use outside a run, e.g. in tests)."""
        if self._warehouse is None:
            self._warehouse = self._connect()
            if self.auto_migrate:
                self._warehouse.migrate()
        return self._warehouse
