"""Password policy, Argon2id parameters, rehash at login, dummy verify."""

from __future__ import annotations

import argon2
import pytest

from server.accounts.passwords import (
    OWASP_MIN_MEMORY_KIB,
    OWASP_MIN_TIME_COST,
    HasherBusyError,
    PasswordHasher,
    PasswordPolicy,
    PasswordRejectedError,
    common_passwords,
    context_words,
)
from server.config import Settings
from tests.accountstest import PASSWORD, Env, enrol, login

POLICY = PasswordPolicy()
CONTEXT = context_words("Ada Lovelace", "ada.lovelace@clinique.example")


def test_defaults_are_at_least_owasp() -> None:
    s = Settings()
    assert s.argon2_memory_kib >= OWASP_MIN_MEMORY_KIB
    assert s.argon2_time_cost >= OWASP_MIN_TIME_COST
    assert s.argon2_parallelism >= 1
    assert (s.password_min_length, s.password_max_length, s.password_min_classes) == (12, 128, 4)
    assert s.password_max_age_days == 365


def test_common_list_is_large() -> None:
    assert len(common_passwords()) >= 10_000


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("Short-1a", "password_too_short"),
        ("alllowercase-123", "password_too_simple"),
        ("Password123!", "password_common"),
        ("!!Sunshine2024", "password_common"),
        ("Lovelace-Rocks-42", "password_contains_context"),
        ("MyMedhub-Secret-42", "password_contains_context"),
        ("Clinique-Secret-42", "password_contains_context"),
        ("A" * 100 + "b1!" + "c" * 30, "password_too_long"),
    ],
)
def test_policy_refuses(password: str, code: str) -> None:
    with pytest.raises(PasswordRejectedError) as info:
        POLICY.check(password, context=CONTEXT)
    assert info.value.code == code


@pytest.mark.parametrize(
    "password", [PASSWORD, "Été-à-Évian-2024!", "x" * 120 + "Aa1!-zz", "Ωmega-ΣIGMA-7-ß"]
)
def test_policy_accepts(password: str) -> None:
    assert POLICY.check(password, context=CONTEXT)


async def test_long_passwords_are_not_truncated() -> None:
    hasher = PasswordHasher(time_cost=1, memory_kib=1024, parallelism=1)
    base = "Aa1!" + "x" * 120
    stored = await hasher.hash(base + "1")
    assert await hasher.verify(stored, base + "1")
    assert not await hasher.verify(stored, base + "2")
    hasher.close()


async def test_unknown_user_gets_a_dummy_verify() -> None:
    hasher = PasswordHasher(time_cost=1, memory_kib=1024, parallelism=1)
    assert not await hasher.verify(None, "whatever")
    assert hasher._dummy is not None  # a real hash was verified
    hasher.close()


async def test_full_queue_refuses() -> None:
    """Past ``queue_max`` places (queued, running or reserved), refused at once with a delay."""
    hasher = PasswordHasher(time_cost=1, memory_kib=1024, parallelism=1, queue_max=2)
    held = [hasher.slot(), hasher.slot()]
    with pytest.raises(HasherBusyError) as info:
        await hasher.hash("x")
    assert info.value.retry_after_s >= 1
    with pytest.raises(HasherBusyError):
        hasher.slot()
    held[0].release()
    held[0].release()  # twice is harmless
    stored = await hasher.hash("Some-password-1")  # the released place is usable again
    assert await held[1].verify(stored, "Some-password-1")  # a reserved place never waits
    held[1].release()
    assert hasher.in_flight == 0
    hasher.close()


async def test_common_password_refused_over_http(env: Env, org_id: str) -> None:
    inv = await env.accounts.admin.invite(
        None, org_id, role="patient", name="Bo", email="b@a.example"
    )
    async with env.client() as http:
        r = await http.post(
            "/invitations/accept", json={"token": inv.token, "password": "Password123!"}
        )
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "password_common"
        r = await http.post("/invitations/accept", json={"token": inv.token, "password": PASSWORD})
        assert r.status_code == 200  # the refusal did not spend the invitation


async def test_rehash_at_login_when_parameters_change(env: Env, org_id: str) -> None:
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "patient", "re@a.example", env.clock())
    before = await env.accounts.service.store.get_user(u.user_id)
    assert before is not None
    assert before.password_hash
    assert argon2.extract_parameters(before.password_hash).time_cost == 1
    old = env.accounts.service.hasher
    env.accounts.service.hasher = PasswordHasher(time_cost=2, memory_kib=1024, parallelism=1)
    env.clock.advance(30)
    async with env.client() as http:
        r = await login(http, u.email, u.secret, env.clock())
        assert r.status_code == 200
    after = await env.accounts.service.store.get_user(u.user_id)
    assert after is not None
    assert after.password_hash
    assert argon2.extract_parameters(after.password_hash).time_cost == 2
    env.accounts.service.hasher.close()
    env.accounts.service.hasher = old
