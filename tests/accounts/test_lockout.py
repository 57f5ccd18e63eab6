"""Brute force: growing locks, the same answer when locked, reset on success, caps."""

from __future__ import annotations

from server.accounts.lockout import Lockout
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


async def test_hourly_cap_per_account_and_per_ip() -> None:
    clock = FakeClock()
    broker = MemoryBroker()
    await broker.start()
    lock = Lockout(broker, threshold=1000, max_per_hour=100, ip_max_per_hour=150, clock=clock)
    for _ in range(100):
        await lock.failure("acct", "10.0.0.1")
    state = await lock.state("acct", "10.0.0.2")
    assert state.locked
    assert state.reason == "hourly_cap"
    for i in range(50):
        await lock.failure(f"other{i}", "10.0.0.1")
    state = await lock.state("fresh", "10.0.0.1")
    assert state.locked
    assert state.reason == "ip_cap"
    assert not (await lock.state("fresh", "10.0.0.3")).locked
    await broker.close()


async def test_counters_hold_across_nodes(env: Env, org_id: str) -> None:
    """Two nodes sharing a broker backend share the counters."""
    node2 = MemoryBroker(backend=env.broker.backend)
    await node2.start()
    a = Lockout(env.broker, clock=env.clock)
    b = Lockout(node2, clock=env.clock)
    for i in range(5):
        await (a if i % 2 else b).failure("shared", None)
    assert (await a.state("shared", None)).locked
    assert (await b.state("shared", None)).locked
    await node2.close()
