"""Writes objects to a store as fast as it can, printing each name once the store acknowledged it.

Run by test_store_durability.py, which SIGKILLs this process mid-burst and then checks that every
name printed here survived: an acknowledged write must never be lost.

    python durability_writer.py STORE_URL PREFIX
"""

from __future__ import annotations

import asyncio
import itertools
import sys

from apiary.store import open_store


async def main(url: str, prefix: str) -> None:
    async with open_store(url) as store:
        print("ready", flush=True)
        for i in itertools.count():
            name = f"{prefix}-{i:06d}"
            await store.create(
                {
                    "apiVersion": "apiary.io/v1",
                    "kind": "Hive",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"i": i},
                }
            )
            sys.stdout.write(name + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
