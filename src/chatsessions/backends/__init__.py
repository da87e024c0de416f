"""Model backends behind one small protocol, found by name among entry points."""

from chatsessions.backends.base import Backend, Completion, StreamItem
from chatsessions.backends.registry import GROUP, installed, make_backend

__all__ = ["GROUP", "Backend", "Completion", "StreamItem", "installed", "make_backend"]
