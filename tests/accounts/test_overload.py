"""A burst of wrong-password logins on a real hub: refused or shed, never 500, and a
bystander signs in right after (issue 10: the node used to saturate and answer 500)."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import httpx

from tests.accountstest import accounts_settings, enrol, login, run_accounts_hub

WRONG = {"error": {"code": "auth_failed", "message": "wrong email or password"}}
BURST = 300


async def test_a_burst_of_wrong_passwords_is_refused_or_shed_and_a_bystander_gets_in(
    tmp_path: Path,
) -> None:
    settings = accounts_settings(
        tmp_path,
        trusted_proxies=["127.0.0.1"],  # so X-Forwarded-For gives each party its address
        password_hash_queue_max=4,  # a small hashing queue, so the burst overflows it
    )
    async with run_accounts_hub(settings) as hub:
        accounts = hub.components.accounts
        org = await accounts.admin.create_org(None, "Clinique A")
        limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
        async with httpx.AsyncClient(base_url=hub.api, limits=limits, timeout=30) as http:
            now = time.time()
            victim = await enrol(http, accounts, org.id, "practitioner", "victim@a.example", now)
            bystander = await enrol(http, accounts, org.id, "patient", "by@a.example", now)
            attacker = {"x-forwarded-for": "192.0.2.66"}

            async def guess(i: int) -> httpx.Response:
                # half on one account (its throttle refuses at once), half sprayed
                email = victim.email if i % 2 else f"nobody{i}@a.example"
                body = {"email": email, "password": f"Wrong-password-{i}"}
                return await http.post("/login", json=body, headers=attacker)

            answers = await asyncio.gather(*(guess(i) for i in range(BURST)))
            statuses = collections.Counter(r.status_code for r in answers)
            assert set(statuses) <= {401, 429}, statuses
            assert statuses[429] > 0, statuses  # the hashing queue was full: shed, not queued
            for r in answers:
                if r.status_code == 401:
                    assert r.json() == WRONG
                else:
                    assert r.json()["error"]["code"] == "rate_limited"
                    assert int(r.headers["retry-after"]) >= 1

            http.headers["x-forwarded-for"] = "198.51.100.7"  # the bystander, elsewhere
            r = await login(http, bystander.email, bystander.secret, time.time(), step_offset=1)
            assert r.status_code == 200, r.text
