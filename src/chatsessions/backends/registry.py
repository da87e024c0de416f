"""Backends are found by name among the ``chatsessions.backends`` entry points.

First-party backends are registered in our own ``pyproject.toml`` exactly as a third
party registers one in theirs, so there is one path and no list to edit:

    [project.entry-points."chatsessions.backends"]
    mybackend = "mypackage.backend:MyBackend"

The entry point names a factory (usually the class) called with the :class:`Settings`;
it reads its own options from ``settings.backend_options[name]``.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from chatsessions.backends.base import Backend
from chatsessions.config import BACKENDS_GROUP, Settings
from chatsessions.errors import BackendUnavailable, InvalidInput

GROUP = BACKENDS_GROUP

BackendFactory = Callable[[Settings], Backend]


def installed() -> dict[str, EntryPoint]:
    """The backends installed now, by name (read afresh: a plugin may be added at runtime)."""
    return {point.name: point for point in entry_points(group=GROUP)}


def make_backend(name: str, settings: Settings) -> Backend:
    """Build the backend registered as ``name``; :class:`InvalidInput` if none is."""
    points = installed()
    point = points.get(name)
    if point is None:
        names = ", ".join(sorted(points)) or "none (is chatsessions installed?)"
        raise InvalidInput(f"unknown backend {name!r}; installed backends: {names}")
    try:
        factory: BackendFactory = point.load()
    except ImportError as exc:  # a plugin whose own dependencies are missing
        raise BackendUnavailable(f"backend {name!r} ({point.value}) cannot be loaded: "
                                 f"{exc}") from exc
    backend = factory(settings)
    if getattr(backend, "name", None) != name:
        # Chats record the backend's name: one answering to another name would send their
        # next turn to a backend that is not this one.
        raise BackendUnavailable(f"backend {name!r} ({point.value}) calls itself "
                                 f"{getattr(backend, 'name', None)!r}")
    return backend
