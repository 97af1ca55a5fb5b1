"""Alembic's entry into the task store's revisions: they run on the connection migrate.py passes, inside the
transaction it holds (it commits once every revision ran, so a failed upgrade leaves the store as it was)."""

from alembic import context

from flows.store.migrate import VERSION_TABLE
from flows.store.schema import metadata

context.configure(
    connection=context.config.attributes["connection"], target_metadata=metadata, version_table=VERSION_TABLE
)
with context.begin_transaction():
    context.run_migrations()
