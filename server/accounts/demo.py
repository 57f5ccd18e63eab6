"""``medhub demo seed``: a demo clinic on the embedded default database, ready to use.

One command after ``make run`` seeds the organisation "Demo clinic": an
admin, two practitioners, a secretary (delegated by practitioner 1 with the
``consultations`` scope), a technician, an interpreter and three patients;
practitioner 1 follows patients 1 and 2, practitioner 2 follows patient 3;
one consultation (practitioner 1 with patient 1, a care relationship of kind
``consultation`` whose ref id is the consultation id ``chat.create`` takes).
Every account is enrolled: a random password that passes the password
policy, a TOTP secret. The command prints each login (role, name, email,
password, TOTP secret and the code of the current 30-second step) and the
consultation id.

It refuses, with one line on stderr and exit code 1, unless the database is
the embedded SQLite one (``database_url`` unset or ``sqlite``), and unless the
database holds no users or only the demo's (service accounts, whose email is
under the reserved ``.invalid`` domain, such as the test-call echo account
``make run`` creates, do not count): it never mixes demo accounts into a
database with real people. A second run finds the demo there and
prints the logins again (fresh codes), read from ``<data_dir>/demo.json``
(mode 0600: the database keeps TOTP secrets and passwords only encrypted or
hashed, so the clear ones the demo prints live in that file, next to the
generated ``secrets`` file, and nowhere else).

The accounts are created through the same service methods as the API and the
``medhub admin`` commands (validated, audited with no actor, versioned).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.accounts import totp
from server.accounts.cli import table, with_components
from server.accounts.errors import ApiError
from server.accounts.passwords import PasswordRejectedError, context_words
from server.accounts.schemas import InviteRequest, parse
from server.audit.events import Action, AuditEvent
from server.config import Settings
from server.policy import RelationKind, Relationship, Scope

if TYPE_CHECKING:
    from server.app import Components

DEMO_FILE = "demo.json"
ORG_NAME = "Demo clinic"
DOMAIN = "demo-clinic.example"
#: (label, role, name): the order is the printed order.
PEOPLE = (
    ("admin", "admin", "Claire Dubois"),
    ("practitioner 1", "practitioner", "Louis Martin"),
    ("practitioner 2", "practitioner", "Sofia Bernard"),
    ("secretary", "secretary", "Julie Petit"),
    ("technician", "technician", "Hugo Moreau"),
    ("interpreter", "interpreter", "Ines Laurent"),
    ("patient 1", "patient", "Paul Durand"),
    ("patient 2", "patient", "Emma Leroy"),
    ("patient 3", "patient", "Lucas Roux"),
)
EXIT_REFUSED = 1


class DemoRefused(Exception):
    """The demo cannot be seeded here; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Login:
    """One demo account, as stored in ``demo.json`` and printed."""

    label: str
    role: str
    user_id: str
    name: str
    email: str
    password: str
    totp_secret: str


@dataclass(frozen=True, slots=True)
class Demo:
    """What ``demo.json`` holds."""

    org_id: str
    consultation: str
    logins: list[Login]


def demo_path(settings: Settings) -> Path:
    """Where the demo's clear secrets are kept: ``<data_dir>/demo.json``."""
    return Path(settings.data_dir) / DEMO_FILE


def read_demo(path: Path) -> Demo | None:
    """The stored demo, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(path.read_text())
        return Demo(data["org_id"], data["consultation"], [Login(**u) for u in data["logins"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_demo(path: Path, demo: Demo) -> None:
    """Write ``demo`` to ``path``, readable and writable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(demo), fh, indent=2)
    os.replace(tmp, path)


def check_embedded(settings: Settings) -> None:
    """Raise :class:`DemoRefused` unless the database is the embedded SQLite one."""
    url = settings.effective_database_url
    if not url.startswith("sqlite"):
        scheme = url.split(":", 1)[0]
        raise DemoRefused(
            f"the demo clinic is only seeded into the embedded SQLite database, "
            f"not {scheme} (unset database_url)"
        )


def _service(email: str) -> bool:
    """A service account, not a person: its email is under the reserved ``.invalid``
    top-level domain (RFC 2606), like the test-call echo account's."""
    return email.rsplit("@", 1)[-1].endswith(".invalid")


def _password(c: Components, name: str, email: str) -> str:
    """A random password the policy accepts (typed or pasted by whoever tries the demo)."""
    policy = c.accounts.service.policy
    while True:
        raw = secrets.token_urlsafe(12)
        candidate = f"{raw[:6]}-{raw[6:12]}-{raw[12:]}"
        try:
            return policy.check(candidate, context=context_words(name, email))
        except PasswordRejectedError:
            continue


async def seed_demo(c: Components) -> Demo:
    """Create the demo organisation, accounts, delegation, care relationships and
    consultation (the database must hold no users: checked by the caller)."""
    admin, svc = c.accounts.admin, c.accounts.service
    org = await admin.create_org(None, ORG_NAME)
    logins: list[Login] = []
    for label, role, name in PEOPLE:
        email = f"{name.lower().replace(' ', '.')}@{DOMAIN}"
        body = parse(InviteRequest, {"role": role, "name": name, "email": email})
        inv = await admin.invite(None, org.id, role=body.role, name=body.name, email=body.email)
        password, secret = _password(c, name, email), totp.new_secret()
        uid, now_us = inv.user.id, svc.now_us()
        await svc.store.update_user(
            uid, by=None, now_us=now_us, status="active",
            password_hash=await svc.hasher.hash(password), password_changed_us=now_us,
            totp_secret=svc.vault.seal(uid, secret),
        )  # fmt: skip
        await svc.store.revoke_invitations(uid, now_us)
        logins.append(Login(label, role, uid, name, email, password, secret))
    ids = {login.label: login.user_id for login in logins}
    p1, p2 = ids["practitioner 1"], ids["practitioner 2"]
    await admin.grant_delegation(None, p1, ids["secretary"], [Scope.CONSULTATIONS.value])
    for actor, patient in ((p1, "patient 1"), (p1, "patient 2"), (p2, "patient 3")):
        await admin.add_care(None, Relationship(RelationKind.FOLLOWS, actor, ids[patient]))
    consultation = f"consult-{secrets.token_hex(4)}"
    rel = Relationship(RelationKind.CONSULTATION, p1, ids["patient 1"], consultation)
    await admin.add_care(None, rel)
    c.audit.record(
        AuditEvent(
            action=Action.ADMIN, org=org.id, target_type="org", target_id=org.id,
            reason="demo_seed",
        )
    )  # fmt: skip
    return Demo(org.id, consultation, logins)


def print_demo(demo: Demo, settings: Settings, *, fresh: bool, as_json: bool) -> None:
    """Print the logins with the codes of the current step (or JSON with ``as_json``)."""
    now = time.time()
    step = totp.step_at(now)
    codes = {login.user_id: totp.code_at(login.totp_secret, step) for login in demo.logins}
    valid_s = int(totp.INTERVAL_S * (step + 1 + totp.TOLERANCE_STEPS) - now)
    if as_json:
        out: dict[str, Any] = {
            "org_id": demo.org_id,
            "consultation": demo.consultation,
            "logins": [{**asdict(login), "code": codes[login.user_id]} for login in demo.logins],
        }
        print(json.dumps(out, indent=2))
        return
    first = "Demo clinic seeded" if fresh else "The demo clinic is already there"
    print(f"{first} (organisation {demo.org_id}, {ORG_NAME!r}). Logins:")
    print()
    rows = [
        [login.label, login.name, login.email, login.password, login.totp_secret,
         codes[login.user_id]]
        for login in demo.logins
    ]  # fmt: skip
    table(["ROLE", "NAME", "EMAIL", "PASSWORD", "TOTP SECRET", "CODE NOW"], rows, "")
    by_label = {login.label: login for login in demo.logins}
    doctor, patient = by_label["practitioner 1"], by_label["patient 1"]
    print()
    print(f"Consultation: {demo.consultation} ({doctor.name} with {patient.name})")
    print(f"The codes change every 30 s; these work for about {valid_s} s. For fresh ones, run")
    print("this command again, or add a TOTP secret to an authenticator app.")
    print(f"Server: http://{settings.host}:{settings.port}   (the secrets: {demo_path(settings)},")
    print("readable by you only). Sign in as the doctor, for instance:")
    print(f"  .venv/bin/medhub-chat --server http://{settings.host}:{settings.port} login "
          f"--email {doctor.email}")  # fmt: skip


async def _seed(c: Components, args: argparse.Namespace) -> int:
    path = demo_path(c.settings)
    stored = read_demo(path)
    present = {u.id for u in await c.accounts.admin.store.list_users(None) if not _service(u.email)}
    if present:
        if stored is None or not present <= {login.user_id for login in stored.logins}:
            raise DemoRefused(
                "the database already holds users that are not the demo's: the demo clinic "
                "is only seeded into a new embedded database (another data_dir)"
            )
        print_demo(stored, c.settings, fresh=False, as_json=args.json)
        return 0
    demo = await seed_demo(c)
    write_demo(path, demo)
    print_demo(demo, c.settings, fresh=True, as_json=args.json)
    return 0


def _cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    async def run(c: Components, a: argparse.Namespace) -> int:
        try:
            return await _seed(c, a)
        except DemoRefused as exc:
            print(f"medhub demo: {exc}", file=sys.stderr)
            return EXIT_REFUSED

    try:
        check_embedded(settings)
    except DemoRefused as exc:
        print(f"medhub demo: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        return asyncio.run(with_components(settings, args, run))
    except ApiError as exc:  # pragma: no cover (the seed's own inputs are valid)
        print(f"medhub demo: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo seed`` to the ``medhub`` parser."""
    demo = subparsers.add_parser("demo", help="a demo clinic to try medhub (embedded default)")
    sub = demo.add_subparsers(dest="demo_command", required=True)
    p = sub.add_parser(
        "seed",
        help="seed a demo clinic into the embedded database and print its logins "
        "(again: print them with fresh codes)",
    )
    p.add_argument("--json", action="store_true", help="JSON output for scripts")
    p.set_defaults(func=_cmd_seed)
