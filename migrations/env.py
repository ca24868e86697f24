"""Alembic environment for qc-stream.

The database URL comes from (first found): a connection or URL handed over by
``qc_stream.storage.migrate`` (``config.attributes``), ``sqlalchemy.url`` in alembic.ini, or
``QC_DATABASE_URL``. Engines are made by ``qc_stream.storage.db.make_engine`` so SQLite gets WAL
and its folder, and a bad URL is one readable line.
"""

from __future__ import annotations

import os
import re

from alembic import context

from qc_stream.storage.db import make_engine
from qc_stream.storage.orm import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from qc_stream.settings import load_settings

        url = os.environ.get("QC_DATABASE_URL") or load_settings().database_url
    return url


# Day and default partitions of inspections / frame_ids (Postgres, revision 0003) are made at run
# time by qc_stream.storage.partitions, not by the models: autogenerate must not drop them.
_PARTITION = re.compile(r"_(p\d{8}|default)$")


def _include_name(name, type_, _parent_names) -> bool:
    return not (type_ == "table" and name and _PARTITION.search(name))


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_name=_include_name,
        # SQLite cannot ALTER most things; batch mode rebuilds tables in later revisions.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
