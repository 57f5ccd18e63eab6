"""Brute force: growing locks, the same answer when locked, reset on success, caps,
and the three levels (address + account pair, account, address)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from server.accounts import totp
from server.accounts.errors import ApiError
from server.accounts.lockout import Lockout, account_key
from server.accounts.passwords import HasherBusyError, HashSlot
from server.accounts.store import User
from server.broker import MemoryBroker
from tests.accountstest import PASSWORD, Env, FakeClock, enrol, login

WRONG = {"error": {"code": "auth_failed", "message": "wrong email or password"}}


async def _fail(http, email: str, n: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(n):
        r = await http.post("/login", json={"email": email, "password": "Wrong-password-1"})
        assert r.status_code == 401
        assert r.json() == WRONG


async def test_lock_grows_and_answers_like_a_wrong_password(env: Env, org_id: str) -> None:
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "practitioner", "l1@a.example", env.clock())
        await _fail(http, u.email, 5)  # the 5th failure locks for 1 minute
        locked = await http.post("/login", json={"email": u.email, "password": PASSWORD})
        assert locked.status_code == 401
        assert locked.json() == WRONG
        env.clock.advance(61)
        await _fail(http, u.email, 5)  # second lock: 5 minutes
        env.clock.advance(61)
        r = await http.post("/login", json={"email": u.email, "password": PASSWORD})
        assert r.json() == WRONG  # still locked after 1 minute
        env.clock.advance(300)
        r = await login(http, u.email, u.secret, env.clock())
        assert r.status_code == 200, r.text
        # success reset the count and the level: 4 failures do not lock
        await _fail(http, u.email, 4)
        env.clock.advance(30)
        r = await login(http, u.email, u.secret, env.clock())
        assert r.status_code == 200, r.text
    actions = env.audit.actions()
    assert actions.count("lockout") == 2
    assert actions.count("unlock") == 1
    assert actions.count("login_failed") == 5 + 1 + 5 + 1 + 4


async def test_lock_durations_follow_the_schedule() -> None:
    clock = FakeClock()
    broker = MemoryBroker()
    await broker.start()
    lock = Lockout(broker, threshold=5, schedule_s=(60, 300, 900), clock=clock)
    durations = []
    for _ in range(20):
        outcome = await lock.failure("acct", "10.0.0.1")
        if outcome.locked_for_s:
            durations.append(outcome.locked_for_s)
    assert durations == [60, 300, 900, 900]
    assert (await lock.state("acct", None)).locked
    clock.advance(901)
    assert not (await lock.state("acct", None)).locked
    await broker.close()


async def test_hourly_cap_per_account() -> None:
    clock = FakeClock()
    broker = MemoryBroker()
    await broker.start()
    lock = Lockout(broker, threshold=1000, account_threshold=1000, max_per_hour=100, clock=clock)
    for _ in range(100):
        await lock.failure("acct", "10.0.0.1")
    state = await lock.state("acct", "10.0.0.2")
    assert state.locked
    assert state.reason == "hourly_cap"
    await broker.close()


async def test_an_address_past_its_quota_is_slowed_down_never_locked() -> None:
    """Past the free failures, one attempt per 1, 2, 4 ... s, never more than the cap."""
    clock = FakeClock()
    broker = MemoryBroker()
    await broker.start()
    lock = Lockout(broker, threshold=1000, ip_free_per_hour=10, ip_max_delay_s=8, clock=clock)
    for i in range(10):
        await lock.failure(f"sprayed{i}", "10.0.0.1")
    first = await lock.begin("fresh", "10.0.0.1")  # the one attempt of this second
    assert not first.state.locked
    again = await lock.begin("other", "10.0.0.1")
    assert again.state.locked
    assert again.state.reason == "address_delay"
    assert not (await lock.begin("fresh", "10.0.0.3")).state.locked  # other addresses: free
    clock.advance(1)
    assert not (await lock.begin("other", "10.0.0.1")).state.locked
    for i in range(200):  # a long spray: the spacing stops growing at the cap
        await lock.failure(f"more{i}", "10.0.0.1")
    clock.advance(8)
    assert not (await lock.begin("someone", "10.0.0.1")).state.locked
    assert (await lock.begin("someone-else", "10.0.0.1")).state.reason == "address_delay"
    clock.advance(8)
    assert not (await lock.begin("someone-else", "10.0.0.1")).state.locked
    await broker.close()


def _client_at(env: Env, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=env.accounts.app(), client=(address, 4444))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_failures_from_one_address_do_not_lock_the_user_out_elsewhere(
    env: Env, org_id: str
) -> None:
    """A guesser at one address locks that address out of the account, not its owner."""
    async with env.client() as http, _client_at(env, "192.0.2.66") as guesser:
        u = await enrol(http, env.accounts, org_id, "practitioner", "own@a.example", env.clock())
        await _fail(guesser, u.email, 3 * env.accounts.service.lockout.threshold)
        r = await guesser.post("/login", json={"email": u.email, "password": PASSWORD})
        assert r.json() == WRONG  # the right password from the guesser's address: refused
        r = await login(http, u.email, u.secret, env.clock(), step_offset=1)  # the owner
        assert r.status_code == 200, r.text
        r = await guesser.post("/login", json={"email": u.email, "password": PASSWORD})
        assert r.json() == WRONG  # the owner's success does not forgive the guesser
    assert "too_many_from_source" in [e.reason for e in env.audit.events]


async def test_guesses_spread_over_addresses_lock_the_account(env: Env, org_id: str) -> None:
    lockout = env.accounts.service.lockout
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "practitioner", "many@a.example", env.clock())
    per_address = lockout.threshold - 1
    for i in range(lockout.account_threshold // per_address + 1):
        async with _client_at(env, f"198.51.100.{i + 1}") as guesser:
            await _fail(guesser, u.email, per_address)
    async with _client_at(env, "203.0.113.5") as fresh:
        r = await fresh.post("/login", json={"email": u.email, "password": PASSWORD})
        assert r.json() == WRONG  # locked for every address now
    assert "too_many_failures" in [e.reason for e in env.audit.events]


async def test_a_shared_address_past_its_quota_lets_its_users_in_within_the_cap(
    env: Env, org_id: str
) -> None:
    """300 failures behind one address (a NAT) no longer lock everyone behind it for an hour."""
    quota = env.settings.lockout_ip_max_failures_per_hour
    async with env.client() as http:  # everyone here shares 10.0.0.7
        u = await enrol(http, env.accounts, org_id, "patient", "nat@a.example", env.clock())
        for i in range(quota + 20):
            r = await http.post(
                "/login", json={"email": f"typo{i}@a.example", "password": "Wrong-password-1"}
            )
            assert r.json() == WRONG
        env.clock.advance(env.settings.lockout_ip_max_delay_s)
        r = await login(http, u.email, u.secret, env.clock())
        assert r.status_code == 200, r.text


async def test_counters_hold_across_nodes(env: Env, org_id: str) -> None:
    """Two nodes sharing a broker backend share the counters, pair and account alike."""
    node2 = MemoryBroker(backend=env.broker.backend)
    await node2.start()
    a = Lockout(env.broker, clock=env.clock)
    b = Lockout(node2, clock=env.clock)
    for i in range(5):
        await (a if i % 2 else b).failure("shared", "10.0.0.1")
    assert (await a.state("shared", "10.0.0.1")).reason == "source_locked"
    assert (await b.state("shared", "10.0.0.1")).reason == "source_locked"
    for i in range(15):
        await (a if i % 2 else b).failure("shared", f"10.0.1.{i}")
    assert (await a.state("shared", "10.0.0.9")).reason == "account_locked"
    assert (await b.state("shared", "10.0.0.9")).reason == "account_locked"
    await node2.close()


async def test_an_admin_unlock_lifts_every_lock_of_the_account(env: Env, org_id: str) -> None:
    async with env.client() as http, _client_at(env, "192.0.2.77") as other:
        admin = await enrol(http, env.accounts, org_id, "admin", "adm@a.example", env.clock())
        u = await enrol(http, env.accounts, org_id, "patient", "forgot@a.example", env.clock())
        await _fail(other, u.email, 5)
        await _fail(http, u.email, 5)
        r = await http.post(
            f"/users/{u.user_id}/unlock", headers={"authorization": f"Bearer {admin.token}"}
        )
        assert r.status_code == 200, r.text
        r = await login(other, u.email, u.secret, env.clock(), step_offset=1)
        assert r.status_code == 200, r.text
    assert not (await env.accounts.service.lockout.state(account_key(u.email), None)).locked


async def test_concurrent_guesses_cannot_pass_the_threshold(
    env: Env, org_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 wrong passwords, then 50 wrong codes, at once: at most ``threshold`` verified."""
    svc = env.accounts.service
    threshold = svc.lockout.threshold
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "practitioner", "race@a.example", env.clock())
    verified: list[str] = []
    real_verify, real_check = HashSlot.verify, svc.check_code

    async def verify(slot: HashSlot, stored: str | None, password: str) -> bool:
        verified.append("password")
        return await real_verify(slot, stored, password)

    async def check_code(user: User, code: str | None, recovery: str | None) -> bool:
        verified.append("code")
        return await real_check(user, code, recovery)

    monkeypatch.setattr(HashSlot, "verify", verify)
    monkeypatch.setattr(svc, "check_code", check_code)

    async def guess(i: int) -> str:
        try:
            await svc.login_password(u.email, f"Wrong-password-{i}", "10.0.0.9")
        except ApiError as exc:
            return exc.code
        return "ok"

    answers = await asyncio.gather(*(guess(i) for i in range(50)))
    assert set(answers) == {"auth_failed"}
    assert verified.count("password") == threshold
    assert env.audit.actions().count("lockout") == 1

    # the same for TOTP guesses on one challenge, once the first lock is over
    env.clock.advance(61)
    challenge = (await svc.login_password(u.email, PASSWORD, "10.0.0.9")).challenge
    verified.clear()

    async def code_guess(i: int) -> str:
        try:
            await svc.login_mfa(challenge, f"{i:06d}", None, "10.0.0.9")
        except ApiError as exc:
            return exc.code
        return "ok"

    valid = {totp.code_at(u.secret, totp.step_at(env.clock()) + d) for d in (-1, 0, 1)}
    wrong = [i for i in range(60) if f"{i:06d}" not in valid][:50]
    answers = await asyncio.gather(*(code_guess(i) for i in wrong))
    assert set(answers) == {"mfa_failed"}
    assert verified.count("code") == threshold
    assert env.audit.actions().count("lockout") == 2


async def test_a_busy_hasher_does_not_use_up_attempts(
    env: Env, org_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt that could not be verified (429) gives its slots back."""
    svc = env.accounts.service
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "practitioner", "busy@a.example", env.clock())

        def busy() -> HashSlot:
            raise HasherBusyError(3)

        with monkeypatch.context() as patched:
            patched.setattr(svc.hasher, "slot", busy)
            for _ in range(3 * svc.lockout.threshold):
                r = await http.post("/login", json={"email": u.email, "password": PASSWORD})
                assert r.status_code == 429
                assert r.json()["error"]["code"] == "rate_limited"
                assert r.headers["retry-after"] == "3"
        r = await login(http, u.email, u.secret, env.clock(), step_offset=1)
        assert r.status_code == 200, r.text


async def test_a_refusal_the_throttles_decided_needs_no_hash(env: Env, org_id: str) -> None:
    """With every hashing place taken, a locked pair still gets its 401 (no hash needed),
    while an attempt that could succeed is shed with 429 and Retry-After."""
    hasher = env.accounts.hasher
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "practitioner", "lk@a.example", env.clock())
        other = await enrol(http, env.accounts, org_id, "patient", "free@a.example", env.clock())
        await _fail(http, u.email, env.accounts.service.lockout.threshold)
        taken = [hasher.slot() for _ in range(env.settings.password_hash_queue_max)]
        try:
            r = await http.post("/login", json={"email": u.email, "password": PASSWORD})
            assert r.status_code == 401
            assert r.json() == WRONG
            r = await http.post("/login", json={"email": other.email, "password": PASSWORD})
            assert r.status_code == 429
            assert r.json()["error"]["code"] == "rate_limited"
            assert int(r.headers["retry-after"]) >= 1
        finally:
            for slot in taken:
                slot.release()
        r = await login(http, other.email, other.secret, env.clock(), step_offset=1)
        assert r.status_code == 200, r.text


async def test_every_spelling_of_an_email_counts_against_one_lockout(env: Env, org_id: str) -> None:
    """Case and Unicode variants find the same account, so they share its counter."""
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "practitioner", "spell@a.example", env.clock())
        variants = ["SPELL@a.example", "spell@A.EXAMPLE", "\uff53pell@a.example", "Spell@a.example"]
        for variant in variants:
            await _fail(http, variant, 1)
        await _fail(http, u.email, 1)  # the 5th failure, whatever the spelling: locked
        r = await http.post("/login", json={"email": u.email, "password": PASSWORD})
        assert r.json() == WRONG
    assert env.audit.actions().count("lockout") == 1
