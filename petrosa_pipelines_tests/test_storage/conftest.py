import pytest

from petrosa_pipelines.serving.warehouse import Warehouse


@pytest.fixture
def warehouse(postgres_db):
    wh = Warehouse(postgres_db)
    wh.migrate()
    yield wh
    wh.dispose()
