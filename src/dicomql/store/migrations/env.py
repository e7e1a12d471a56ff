"""Alembic environment: migrate the engine the caller hands over (never a URL from a file)."""

from __future__ import annotations

from alembic import context

from dicomql.store.schema import metadata

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Servers starting together on one database migrate one at a time; the others wait
            # here and then find nothing left to do. The key is arbitrary but fixed.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4412617291)")
        context.run_migrations()
    connection.commit()
