"""What changed between two update operations of one updater."""

from __future__ import annotations

from sqlalchemy import select

from quaymaster.scanner.models import vulnerability

# Columns that say what a vulnerability *is*; row ids and update operation ids do not.
IDENTITY = [c.name for c in vulnerability.columns if c.name not in ("id", "uo_id")]


async def rows_of(conn, uo_id: int) -> list:
    return (await conn.execute(select(vulnerability).where(vulnerability.c.uo_id == uo_id))).all()


def diff_rows(prev: list, cur: list) -> tuple[list, list]:
    """(added, removed): rows of `cur` whose identity is not in `prev`, and the other way round."""
    def key(row) -> tuple:
        return tuple(getattr(row, name) for name in IDENTITY)

    prev_keys = {key(r) for r in prev}
    cur_keys = {key(r) for r in cur}
    return [r for r in cur if key(r) not in prev_keys], [r for r in prev if key(r) not in cur_keys]
