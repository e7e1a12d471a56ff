from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from dicomql.service.config import ServiceConfig
from dicomql.store.index import Index
from dicomql.store.schema import metadata


def test_migrations_build_exactly_the_schema_the_code_declares(
    service_config: ServiceConfig,
) -> None:
    # A schema.py change without a migration would leave existing deployments behind.
    service_config.data_dir.mkdir(parents=True)
    index = Index.open(service_config.index_url)
    try:
        with index.engine.connect() as connection:
            context = MigrationContext.configure(connection)
            differences = compare_metadata(context, metadata)
        assert differences == []
    finally:
        index.close()


def test_opening_an_index_twice_keeps_its_tables_and_revision(
    service_config: ServiceConfig,
) -> None:
    service_config.data_dir.mkdir(parents=True)
    Index.open(service_config.index_url).close()
    index = Index.open(service_config.index_url)
    try:
        with index.engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
            tables = set(inspect(connection).get_table_names())
        assert revision is not None
        assert {"datasets", "dicom_stores", "studies", "series", "instances"} <= tables
    finally:
        index.close()
