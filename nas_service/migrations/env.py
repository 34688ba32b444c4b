"""Alembic environment: the URL comes from the caller's config or NAS_DATABASE_URL."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from nas_service.db import normalize_url
from nas_service.models import Base
from nas_service.settings import Settings

config = context.config
if not config.get_main_option("sqlalchemy.url"):
    url = normalize_url(Settings().resolved_database_url)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
