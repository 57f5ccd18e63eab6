"""Alembic environment: run only through :mod:`server.store.migrate`.

That module opens an async connection and hands its sync facade in
``config.attributes["connection"]`` (the standard Alembic asyncio recipe), so
this file never creates an engine and never reads an ini file.
"""

from __future__ import annotations

from alembic import context

from server.store.schema import import_table_modules, metadata


def run_migrations_online() -> None:
    """Apply the migrations on the connection given by ``server.store.migrate``."""
    import_table_modules()  # so that autogenerate sees every capability's tables
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with server.store.migrate (medhub migrate)")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
