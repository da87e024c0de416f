"""The baseline of the service benchmark: a bare FastAPI endpoint in front of the model.

``POST /chats/{id}/messages`` takes the same body as chatsessions' (``{"content": ...}``),
appends it to the chat's history, posts that history to the model with one shared HTTP
client and returns the answer. The history lives in a dict (the tutorial's baseline) so
the model receives exactly the request chatsessions sends and both sides' answers can be
compared; nothing is stored, checked or counted. ``POST /chats`` and ``GET /healthz``
exist so the client code is the same on both sides.

The model client is an ``AsyncClient`` of httpx2 (the fork of httpx that the ``openai``
client inside chatsessions is built on; see :mod:`bench.servers`), with the openai
client's default pool: the same HTTP stack as chatsessions. With
``BENCH_PROXY_CLIENT=aiohttp`` it is aiohttp, which spends less CPU per request, to show
what a proxy without that cost does.

``python -m bench.proxy_app --port P`` runs it under uvicorn with the arguments
``chatsessions serve`` uses (uvloop, httptools, log level info, one worker).
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from bench.harness import MODEL, SYSTEM_PROMPT
from bench.servers import httpx

MAX_TOKENS = 512  # what chatsessions asks for when a chat sets none


class Turn(BaseModel):
    content: str


class _Model:
    """POST a JSON body to the model's chat completions; the answer's JSON back."""

    def __init__(self, base_url: str, kind: str) -> None:
        self.url = base_url + "/chat/completions"
        self.kind = kind
        if kind == "aiohttp":
            # idle connections closed before uvicorn's 5 s keep-alive timeout does
            connector = aiohttp.TCPConnector(limit=1000, keepalive_timeout=3)
            self.session = aiohttp.ClientSession(connector=connector,
                                                 timeout=aiohttp.ClientTimeout(total=60))
        else:
            # the openai client's default pool, which chatsessions' backend uses
            limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
            self.http = httpx.AsyncClient(limits=limits, timeout=60)

    async def post(self, body: dict[str, Any]) -> Any:
        if self.kind == "aiohttp":
            async with self.session.post(self.url, json=body) as response:
                response.raise_for_status()
                return await response.json()
        reply = await self.http.post(self.url, json=body)
        reply.raise_for_status()
        return reply.json()

    async def aclose(self) -> None:
        if self.kind == "aiohttp":
            await self.session.close()
        else:
            await self.http.aclose()


def create_app() -> FastAPI:
    chats: dict[str, list[dict[str, str]]] = {}
    model: _Model | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal model
        model = _Model(os.environ["BENCH_MODEL_URL"],
                       os.environ.get("BENCH_PROXY_CLIENT", "httpx"))
        try:
            yield
        finally:
            await model.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/chats", status_code=201)
    async def create_chat() -> dict[str, str]:
        chat_id = str(uuid.uuid4())
        chats[chat_id] = [{"role": "system", "content": SYSTEM_PROMPT}]
        return {"id": chat_id}

    @app.post("/chats/{chat_id}/messages")
    async def send_message(chat_id: str, turn: Turn) -> dict[str, Any]:
        history = chats.get(chat_id)
        if history is None:
            raise HTTPException(404, "no such chat")
        assert model is not None
        history.append({"role": "user", "content": turn.content})
        response = await model.post(
            {"model": MODEL, "messages": history, "max_tokens": MAX_TOKENS})
        answer = (response["choices"][0]["message"]["content"] or "").strip()
        history.append({"role": "assistant", "content": answer})
        return {"role": "assistant", "content": answer}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench.proxy_app")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run("bench.proxy_app:create_app", factory=True, host="127.0.0.1", port=args.port,
                workers=1, log_level="info", proxy_headers=False)


if __name__ == "__main__":
    main()
