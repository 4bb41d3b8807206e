import pytest

from petrosa_pipelines.storage.warehouse import Warehouse


@pytest.fixture
def warehouse(postgres_db):
    wh = Warehouse(postgres_db)
    wh.migrate()
    yield wh
    wh.dispose()
