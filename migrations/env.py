"""Alembic environment: the URL is given by the caller (core.migrate) or DATABASE_URL."""
from alembic import context
from sqlalchemy import engine_from_config, pool

from core.config import Settings
from core.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url
config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))


def run_migrations_online() -> None:
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            # Several processes may run `db upgrade` at once (release phase, tests): serialise them.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7365423)")
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
