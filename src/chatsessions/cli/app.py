"""The ``chatsessions`` command: global options, its command groups (each module's own
typer app, added here), and the one place errors become exit codes."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from chatsessions import BackendError, ChatNotFound, ChatSessionsError, InvalidInput
from chatsessions.cli import branching, commands, demo, find, keys, repl, serve, transfer
from chatsessions.cli.common import err_console

app = typer.Typer(
    help="Many simultaneous, durable conversations with large language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(demo.app)
app.add_typer(commands.app)
app.add_typer(repl.app)
app.add_typer(branching.app)
app.add_typer(transfer.app)
app.add_typer(find.app)
app.add_typer(serve.app)
app.add_typer(keys.app, name="keys")

#: Exit codes, so scripts can tell failures apart.
EXIT_CODES: dict[type[ChatSessionsError], int] = {
    ChatNotFound: 3,
    InvalidInput: 4,
    BackendError: 5,
}


@app.callback()
def configure(
    ctx: typer.Context,
    database_url: Annotated[
        str | None, typer.Option(help="sqlite:///file.db, postgresql://..., memory://")
    ] = None,
    backend: Annotated[str | None, typer.Option(help="local (default) or openai")] = None,
    model: Annotated[str | None, typer.Option(help="model name for the openai backend")] = None,
) -> None:
    """Settings also come from CHATSESSIONS_* environment variables and a .env file."""
    overrides: dict[str, Any] = {}
    if database_url:
        overrides["database_url"] = database_url
    if backend:
        overrides["backend"] = backend
    if model:
        overrides["model"] = model
    ctx.obj = overrides


def exit_code(exc: ChatSessionsError) -> int:
    for kind, code in EXIT_CODES.items():
        if isinstance(exc, kind):
            return code
    return 1


def main() -> None:
    """Entry point: one clear line on stderr and a non-zero exit code on failure."""
    try:
        result = app(standalone_mode=False)  # returns the code of a typer.Exit
        if isinstance(result, int) and result:
            sys.exit(result)
    except ChatSessionsError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(exit_code(exc))
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: shown by click, exit code 2
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)
    except Exception as exc:  # anything unexpected: one line, never a traceback
        message = f"{type(exc).__name__}: {exc}"
        err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
        sys.exit(1)
