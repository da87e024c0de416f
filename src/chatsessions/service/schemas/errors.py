"""The one error shape every operation answers with."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    type: str = Field(description="machine-readable kind, e.g. not_found, invalid_request")
    message: str = Field(description="what went wrong, for humans")
    chat_id: str | None = Field(
        default=None, description="a failed edit: the new chat holding the edited message, "
                                  "marked failed, to retry there")


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    error: ErrorDetail
