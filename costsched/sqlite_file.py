"""One SQLite file in WAL mode, opened per transaction: the ledger's and the scheduler's store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from costsched.errors import ConfigError


class SqliteFile:
    """A database file created with ``schema`` on first use; ``what`` names it in errors.

    ``added_columns``: (table, column, declaration) that later versions added to
    ``schema``'s tables; a file made before them gets them (NULL or their default in
    the rows it has), so an upgrade keeps every row."""

    def __init__(self, path: str | Path, schema: str, what: str,
                 added_columns: Sequence[tuple[str, str, str]] = ()):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.transaction() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(schema)
                for table, column, declaration in added_columns:
                    have = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                    if column not in have:
                        _add_column(db, table, column, declaration)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path} is not a {what} ({exc})") from None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection whose work commits on success and rolls back on error."""
        db = sqlite3.connect(self.path, timeout=30.0)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()


def _add_column(db: sqlite3.Connection, table: str, column: str, declaration: str) -> None:
    """Add ``column`` unless another process opening the same file just did."""
    try:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    except sqlite3.OperationalError as exc:
        if "duplicate column name" not in str(exc):
            raise
