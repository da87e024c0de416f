"""The engine: how a turn happens. Not public API; the public API (``chatsessions``) drives
it, and it drives the store and the backends."""
