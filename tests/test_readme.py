"""The README's library table names every public method of the library."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from chatsessions import AsyncChatSessions

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_library_table_lists_every_public_method() -> None:
    text = README.read_text()
    start = text.index("## The library")
    end = text.index("## Command line")
    names = [name for name, _ in inspect.getmembers(AsyncChatSessions)
             if not name.startswith("_")]
    missing = [name for name in names
               if not re.search(r"`[^`\n]*\b" + re.escape(name) + r"\b", text[start:end])]
    assert missing == []
