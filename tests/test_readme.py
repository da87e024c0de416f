"""The README names every public method of the library, in code (its tables and examples)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from chatsessions import AsyncChatSessions

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_library_table_lists_every_public_method() -> None:
    text = README.read_text()
    names = [name for name, _ in inspect.getmembers(AsyncChatSessions)
             if not name.startswith("_")]
    missing = [name for name in names
               if not re.search(r"`[^`\n]*\b" + re.escape(name) + r"\b", text)]
    assert missing == []
