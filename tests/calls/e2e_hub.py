"""A hub process for the end-to-end call tests (``python -m tests.calls.e2e_hub WORKDIR SETTINGS``).

A real hub (uvicorn on a free loopback port) with seeded accounts and the test
authenticator (``token_for(user)``). Prints ``READY <port>``, serves until a
line arrives on stdin, then prints ``RECORDS <json>`` (every call record) and
exits. The aiortc peers run in other processes: media never shares the hub's
event loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from server.calls.tables import call_record
from tests.chat.helpers import principals, seed
from tests.hubtest import hub_settings, run_hub

PEOPLE = {
    "alice": ("org-a", "practitioner"),
    "bob": ("org-a", "practitioner"),
    "pat": ("org-a", "patient"),
    "echo": ("org-t", "technician"),
}
CARE = [("consultation", "alice", "pat", "k1")]


async def main(workdir: Path, overrides: dict[str, Any]) -> None:
    settings = hub_settings(workdir, **overrides)
    async with run_hub(settings, principals(PEOPLE)) as hub:
        await seed(hub.components.database, PEOPLE, care=CARE)
        print(f"READY {hub.port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        async with hub.components.database.begin() as conn:
            rows = (await conn.execute(sa.select(call_record))).mappings().all()
    records = [{k: v for k, v in r.items() if k != "quality"} for r in rows]
    print("RECORDS " + json.dumps(records), flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), json.loads(sys.argv[2])))
