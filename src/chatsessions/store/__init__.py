"""Durable storage behind one small protocol: SQL (SQLite, PostgreSQL) or memory."""

from chatsessions.store.base import Store, open_store

__all__ = ["Store", "open_store"]
