"""Delegations keep an immutable history: who granted or revoked them, when, and what they
were; on SQLite and on PostgreSQL, through the admin API as an administrator uses it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection

from server.accounts.relations import RelationStore
from server.accounts.tables import delegation_versions
from server.store.db import Database
from server.store.migrate import alembic_config
from tests.accountstest import accounts_env, enrol


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_grant_and_revoke_leave_versions_with_who_and_when(
    tmp_path: Path, db_url: str
) -> None:
    async with accounts_env(tmp_path, db_url) as env:
        org = (await env.accounts.admin.create_org(None, "Clinique A")).id
        async with env.client() as http:
            now = env.clock()
            doc = await enrol(http, env.accounts, org, "practitioner", "d@a.example", now)
            sec = await enrol(http, env.accounts, org, "secretary", "s@a.example", now)
            admin = await enrol(http, env.accounts, org, "admin", "a@a.example", now)
            body = {
                "practitioner_id": doc.user_id,
                "delegate_id": sec.user_id,
                "scopes": ["contact", "consultations"],
            }
            r = await http.post("/delegations", json=body, headers=bearer(doc.token))
            assert r.status_code == 201, r.text
            did = r.json()["id"]
            granted_us = env.accounts.service.now_us()
            env.clock.advance(60)
            r = await http.delete(f"/delegations/{did}", headers=bearer(admin.token))
            assert r.status_code == 200, r.text
            revoked_us = env.accounts.service.now_us()
            # revoking again changes nothing, and leaves no row
            r = await http.delete(f"/delegations/{did}", headers=bearer(admin.token))
            assert r.status_code == 404
        # granted from the command line (no caller): by nobody in particular
        other = await env.accounts.admin.grant_delegation(
            None, doc.user_id, sec.user_id, ["contact"]
        )

        relations = env.accounts.admin.relations
        history = await relations.delegation_history(did)
        assert [(v.version, v.action, v.changed_by) for v in history] == [
            (1, "grant", doc.user_id),
            (2, "revoke", admin.user_id),
        ]
        assert [(v.changed_us, v.revoked_us) for v in history] == [
            (granted_us, None),
            (revoked_us, revoked_us),
        ]
        for v in history:  # each row is the whole delegation as it became
            assert (v.delegation_id, v.org_id, v.practitioner_id, v.delegate_id) == (
                did, org, doc.user_id, sec.user_id,
            )  # fmt: skip
            assert v.scopes == {"contact", "consultations"}
        (cli,) = await relations.delegation_history(other)
        assert (cli.version, cli.action, cli.changed_by, cli.scopes) == (
            1, "grant", None, frozenset({"contact"}),
        )  # fmt: skip
        assert await relations.delegation_history("d-unknown") == []

        # the rows are in the database, two for the revoked delegation, one for the live one
        async with env.db.begin(readonly=True) as conn:
            ids = (await conn.execute(sa.select(delegation_versions.c.delegation_id))).scalars()
            assert Counter(ids) == {did: 2, other: 1}


def _upgrade_to(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def test_delegations_from_before_the_history_get_a_baseline_version(db_url: str) -> None:
    async with Database(db_url, pool_size=1) as db:
        async with db.engine.connect() as conn:
            await conn.run_sync(_upgrade_to, "0008")
            await conn.commit()
        async with db.begin() as conn:
            await conn.execute(sa.text("INSERT INTO orgs VALUES ('o-1', 'A', false, 1)"))
            for uid in ("u-doc", "u-sec"):
                await conn.execute(
                    sa.text(
                        "INSERT INTO users (id, org_id, role, name_enc, email_enc, phone_enc,"
                        " email_index, status, totp_last_step, created_us, version)"
                        " VALUES (:id, 'o-1', 'x', :b, :b, :b, :i, 'active', -1, 1, 1)"
                    ),
                    {"id": uid, "b": b"-", "i": uid.encode()},
                )
            await conn.execute(
                sa.text(
                    "INSERT INTO delegations VALUES"
                    " ('d-live', 'o-1', 'u-doc', 'u-sec', 'contact', 10, NULL),"
                    " ('d-gone', 'o-1', 'u-doc', 'u-sec', 'consultations,contact', 20, 30)"
                )
            )
        async with db.engine.connect() as conn:
            await conn.run_sync(_upgrade_to, "head")
            await conn.commit()
        relations = RelationStore(db)
        (live,) = await relations.delegation_history("d-live")
        (gone,) = await relations.delegation_history("d-gone")
        assert (live.version, live.action, live.changed_by, live.changed_us) == (
            1, "baseline", None, 10,
        )  # fmt: skip
        assert (gone.action, gone.changed_us, gone.revoked_us, gone.scopes) == (
            "baseline", 30, 30, frozenset({"consultations", "contact"}),
        )  # fmt: skip
        # the next change continues the history
        assert await relations.revoke_delegation("d-live", 40, by="u-doc")
        history = await relations.delegation_history("d-live")
        assert [(v.version, v.action, v.changed_by) for v in history] == [
            (1, "baseline", None),
            (2, "revoke", "u-doc"),
        ]
