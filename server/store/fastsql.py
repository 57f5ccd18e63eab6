"""Hot-path statements compiled once per dialect and run straight through the driver.

The node's write transaction (chat batches and audit entries) runs the same
few statements thousands of times a second. Building and compiling a Core
statement costs far more than executing it, and in a database thread every
Python step also competes with the event loop for the interpreter lock.
:class:`Prepared` compiles a Core statement once per dialect (SQLite ``?``,
asyncpg ``$n``) and executes it with ``exec_driver_sql``; :class:`MultiInsert`
renders an INSERT of ``n`` rows as ONE statement (one driver step, not one per
row), cached per row count.

Only plain values (str, int, bytes, None) may be bound: no type processing
happens on this path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, CursorResult, Dialect

_NUMBERED = re.compile(r"\$(\d+)")


class Prepared:
    """A Core statement with named bind parameters, compiled once per dialect."""

    def __init__(self, stmt: sa.ClauseElement) -> None:
        self._stmt = stmt
        self._compiled: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {}

    def _for(self, dialect: Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled: Any = self._stmt.compile(dialect=dialect)
            found = (compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params))
            self._compiled[dialect.name] = found
        return found

    def execute(self, conn: Connection, values: Mapping[str, Any]) -> CursorResult[Any]:
        """Run it with ``values`` (named bind parameters; literals keep their value)."""
        sql, names, defaults = self._for(conn.dialect)
        return conn.exec_driver_sql(sql, tuple(values.get(n, defaults[n]) for n in names))


class MultiInsert:
    """``INSERT INTO table (columns) VALUES (...), (...)``: many rows, one statement."""

    def __init__(self, table: sa.Table, columns: Sequence[str], max_rows: int = 200) -> None:
        self.columns = tuple(columns)
        self.max_rows = max_rows
        self._single = sa.insert(table).values({c: sa.bindparam(c) for c in self.columns})
        self._sql: dict[tuple[str, int], str] = {}

    def _render(self, dialect: Dialect, n: int) -> str:
        key = (dialect.name, n)
        sql = self._sql.get(key)
        if sql is None:
            compiled: Any = self._single.compile(dialect=dialect)
            assert tuple(compiled.positiontup or ()) == self.columns, compiled.positiontup
            text = compiled.string
            head, sep, group = text.rpartition(" VALUES ")
            assert sep, text
            width = len(self.columns)
            if _NUMBERED.search(group):
                groups = [_shift(group, i * width) for i in range(n)]
            else:
                groups = [group] * n
            sql = self._sql[key] = f"{head} VALUES {', '.join(groups)}"
        return sql

    def execute(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` (each a sequence of values in :attr:`columns` order)."""
        for i in range(0, len(rows), self.max_rows):
            chunk = rows[i : i + self.max_rows]
            params = tuple(v for row in chunk for v in row)
            conn.exec_driver_sql(self._render(conn.dialect, len(chunk)), params)


def _shift(group: str, by: int) -> str:
    """``group`` with every ``$k`` placeholder renumbered ``$(k + by)``."""
    return _NUMBERED.sub(lambda m: f"${int(m.group(1)) + by}", group)


def placeholders(dialect: Dialect, count: int, start: int = 1) -> list[str]:
    """``count`` positional placeholders in the driver's style (``?`` or ``$n`` from ``start``)."""
    if dialect.paramstyle == "qmark":
        return ["?"] * count
    if dialect.paramstyle in ("numeric_dollar", "format", "pyformat"):
        return [f"${i}" for i in range(start, start + count)]
    raise NotImplementedError(f"paramstyle {dialect.paramstyle}")
