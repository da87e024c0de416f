"""Configuration names other tools rely on, and database URL handling."""

from __future__ import annotations

import pytest

from chatsessions.config import Settings, default_database_path
from chatsessions.store.engines import database_url


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSESSIONS_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("CHATSESSIONS_BACKEND", "openai")
    monkeypatch.setenv("CHATSESSIONS_MODEL", "my-model")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = Settings()
    assert settings.database_url == "postgresql://u@h/db"
    assert (settings.backend, settings.model) == ("openai", "my-model")
    assert settings.openai_base_url == "http://127.0.0.1:9/v1"
    assert settings.openai_api_key == "sk-test"


def test_keyword_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSESSIONS_BACKEND", "openai")
    settings = Settings(backend="local", openai_base_url="http://x/v1")
    assert settings.backend == "local"
    assert settings.openai_base_url == "http://x/v1"


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CHATSESSIONS_DATABASE_URL", "CHATSESSIONS_BACKEND", "CHATSESSIONS_MODEL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.backend == "local"
    assert settings.model == "gpt-4o-mini"
    assert settings.database_url == f"sqlite:///{default_database_path()}"


def test_invalid_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend"):
        Settings(backend="nope")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite:///x.db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_plain_urls_get_their_drivers(url: str, expected: str) -> None:
    assert database_url(url).render_as_string() == expected
