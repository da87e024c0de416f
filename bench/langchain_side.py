"""The peer: LangChain's RunnableWithMessageHistory over SQLChatMessageHistory.

The comparison is about the history/storage layer, so the model step is the very same
``openai`` client call our OpenAIBackend makes, wrapped in a ``RunnableLambda`` and timed
by the same ModelTimer (``ChatOpenAI`` would add its own callback and conversion layers,
and would hide them inside or outside the timer depending on where it is cut). The peer
is set up as generously as we know how:

* one SQLAlchemy engine shared by all chats (LangChain's docs build one per call);
* one SQLChatMessageHistory per chat, built once and reused (each construction declares a
  model class and runs ``CREATE TABLE IF NOT EXISTS`` checks);
* on SQLite, the same pragmas our store uses (WAL, ``synchronous=NORMAL``), so neither
  side pays for fsyncs the other skips.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import openai
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from bench.harness import MODEL, SYSTEM_PROMPT
from bench.sides import MAX_TOKENS
from bench.workload import Side, timed

with warnings.catch_warnings():
    # langchain-community announces its own sunset on import; it is still the peer users run.
    warnings.simplefilter("ignore", DeprecationWarning)
    from langchain_community.chat_message_histories import SQLChatMessageHistory

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def sync_url(database_url: str) -> str:
    """The sync driver URL SQLChatMessageHistory needs (psycopg 3 for PostgreSQL)."""
    for plain in ("postgresql://", "postgres://"):
        if database_url.startswith(plain):
            return "postgresql+psycopg://" + database_url[len(plain):]
    return database_url


def make_engine(database_url: str) -> Engine:
    url = sync_url(database_url)
    if not url.startswith("sqlite"):
        return create_engine(url)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


class LangChainSide(Side):
    """The workload through RunnableWithMessageHistory; model calls timed like ours."""

    def __init__(self, base_url: str, database_url: str,
                 table_name: str = "message_store") -> None:
        super().__init__()
        self.table_name = table_name
        self.client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0)
        self.engine = make_engine(database_url)
        self.histories: dict[str, SQLChatMessageHistory] = {}
        prompt = ChatPromptTemplate.from_messages(
            [("system", SYSTEM_PROMPT), MessagesPlaceholder("history"), ("human", "{input}")])
        with warnings.catch_warnings():
            # Deprecated in favour of LangGraph persistence, yet still what the docs teach.
            warnings.simplefilter("ignore", DeprecationWarning)
            self.chain = RunnableWithMessageHistory(
                prompt | RunnableLambda(self._model), self._history,
                input_messages_key="input", history_messages_key="history",
            )

    #: what holds one chat's history (a subclass may time it)
    history_class: type[SQLChatMessageHistory] = SQLChatMessageHistory

    def _history(self, session_id: str) -> BaseChatMessageHistory:
        if session_id not in self.histories:
            self.histories[session_id] = self.history_class(
                session_id=session_id, connection=self.engine, table_name=self.table_name)
        return self.histories[session_id]

    def _model(self, prompt: PromptValue) -> BaseMessage:
        messages = [{"role": _ROLES[m.type], "content": str(m.content)}
                    for m in prompt.to_messages()]
        with self.timer.time():
            response = self.client.chat.completions.create(
                model=MODEL, messages=messages, max_tokens=MAX_TOKENS)  # type: ignore[arg-type]
        return AIMessage(content=(response.choices[0].message.content or "").strip())

    def _send(self, session_id: str, text: str) -> str:
        config: Any = {"configurable": {"session_id": session_id}}
        return str(self.chain.invoke({"input": text}, config=config).content)

    def open(self) -> None:
        self._send(str(uuid.uuid4()), "warm-up")

    def new_chat(self) -> tuple[str, float]:
        # A LangChain chat is just a new session id: nothing to store until its first turn.
        return timed(lambda: str(uuid.uuid4()))

    def send(self, chat_id: str, text: str) -> tuple[str, float]:
        return timed(lambda: self._send(chat_id, text))

    def close(self) -> None:
        self.engine.dispose()
        self.client.close()
