"""The HTTP service: REST + Server-Sent Events, API keys and tenants, a web console."""

from chatsessions.service.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
