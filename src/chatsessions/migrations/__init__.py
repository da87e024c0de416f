"""Alembic migrations, applied automatically when a store opens."""
