"""Run as a separate process: open a journal, commit one input entry to a session, close.

Used to prove that a waiter in another process wakes (PostgreSQL LISTEN/NOTIFY, SQLite polling)
and that what one process wrote another reads.
"""

from __future__ import annotations

import asyncio
import sys

from apiary.journal import Entry, open_journal


async def main(url: str, session: str, entry_id: str) -> None:
    async with open_journal(url) as journal:
        while True:
            current = await journal.load(session)
            entries = [Entry(session, entry_id, "input", {"from": "another process"})]
            version = await journal.commit(
                session, expect_version=current.version, state={"last": entry_id}, entries=entries
            )
            if version is not None:
                return


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
