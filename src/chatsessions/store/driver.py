"""Statements compiled once into the database driver's own SQL and parameter order.

A turn's two writes are the only store calls on every request's path. Even with their
statements built once (``statements``), SQLAlchemy's execution layer (execution context,
result wrapping, parameter processing, events) took about as long as SQLite itself did.
Here SQLAlchemy still writes the SQL and the value conversions, once per dialect; each
call then only orders its parameters into a tuple for the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True, slots=True)
class DriverStatement:
    sql: str
    #: parameter names in the driver's positional order (``?`` or ``$n``)
    names: tuple[str, ...]
    #: the dialect's conversion of each parameter (a datetime into SQLite's text), or None
    converters: tuple[Callable[[Any], Any] | None, ...]
    #: values of the binds the statement carries itself (the 1 in ``message_count + 1``)
    fixed: Mapping[str, Any]

    @classmethod
    def compile(cls, statement: ClauseElement, dialect: Dialect,
                column_keys: list[str] | None = None) -> DriverStatement:
        compiled = cast(SQLCompiler,
                        statement.compile(dialect=dialect, column_keys=column_keys))
        names = tuple(compiled.positiontup or ())
        binds = compiled.binds
        converters = tuple(binds[name].type.dialect_impl(dialect).bind_processor(dialect)
                           for name in names)
        fixed = {name: bind.value for name, bind in binds.items() if not bind.required}
        return cls(str(compiled), names, converters, fixed)

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The positional arguments for ``params`` (by name; fixed binds filled in)."""
        fixed = self.fixed
        values = [params[name] if name in params else fixed[name] for name in self.names]
        return tuple(value if convert is None or value is None else convert(value)
                     for value, convert in zip(values, self.converters, strict=True))
