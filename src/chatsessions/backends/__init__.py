"""Model backends behind one small protocol, created by name."""

from chatsessions.backends.base import Backend, Completion, StreamItem, make_backend

__all__ = ["Backend", "Completion", "StreamItem", "make_backend"]
