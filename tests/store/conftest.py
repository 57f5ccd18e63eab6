"""Store fixtures: ``db_url`` runs each test on SQLite and on a real PostgreSQL."""

from tests.pg import db_url, start_postgres

__all__ = ["db_url", "start_postgres"]
