"""THE authorisation policy: pure functions deciding who may do what to which target.

Nothing here does I/O. Callers load the facts (a subject's delegations, the
care relationships around a patient) and ask :func:`decide`, which returns a
:class:`Decision` with a stable reason code for the audit trail.

Rules, in order:

1. A superadmin may do everything, in every organisation; ``cross_org`` is set
   on the decision so the caller audits the crossing.
2. Nothing else crosses organisations: a target of another organisation is
   denied (``other_org``), whatever the role, relationship or delegation.
3. Account administration (``org.*``, ``user.*``, ``role.*``, ``delegation.*``,
   ``care.assign``, ``audit.read``) is for the organisation's admins; a user
   may read themself; a practitioner may grant and revoke their own
   delegations to secretaries; superadmin accounts are only touched by
   superadmins.
4. Clinical capabilities (presence, chat, calls, contact data, EEG, records)
   follow care relationships: a patient acts on their own data; a practitioner
   on patients they follow or consult; a technician and an interpreter on the
   EEG exams they are assigned to; a secretary only through a live delegation
   from a practitioner who follows the patient, within its scopes; an admin
   has no clinical access.

5. Staff of one organisation see each other's presence and may talk in direct
   or group conversations of their organisation (no patient involved); a
   patient sees the presence of the staff who may see theirs (their care team,
   and the secretaries acting for it); a consultation conversation follows
   rule 4 on its patient, for members only. Superadmins are not part of
   presence or chat: they neither see nor are seen, read nor write there.

Later capabilities only supply facts: their actions are already named here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """A user's role within an organisation (``superadmin``: the platform's)."""

    PATIENT = "patient"
    SECRETARY = "secretary"
    PRACTITIONER = "practitioner"
    TECHNICIAN = "technician"
    INTERPRETER = "interpreter"
    ADMIN = "admin"
    SUPERADMIN = "superadmin"


#: Every role but patient: staff passwords are renewed yearly (the HDS plans).
STAFF_ROLES = frozenset(Role) - {Role.PATIENT}


class Action(StrEnum):
    """What a subject wants to do (stable names, used in audit reasons)."""

    ORG_CREATE = "org.create"
    ORG_READ = "org.read"
    USER_LIST = "user.list"
    USER_READ = "user.read"
    USER_INVITE = "user.invite"
    USER_DISABLE = "user.disable"
    USER_UNLOCK = "user.unlock"
    ROLE_GRANT = "role.grant"
    DELEGATION_GRANT = "delegation.grant"
    DELEGATION_REVOKE = "delegation.revoke"
    CARE_ASSIGN = "care.assign"
    AUDIT_READ = "audit.read"
    CONTACT_READ = "contact.read"
    CONSULTATION_MANAGE = "consultation.manage"
    PRESENCE_SEE = "presence.see"
    CHAT_READ = "chat.read"
    CHAT_WRITE = "chat.write"
    CALL_START = "call.start"
    EEG_STREAM = "eeg.stream"
    EEG_VIEW = "eeg.view"
    EEG_ANNOTATE = "eeg.annotate"
    RECORD_READ = "record.read"
    RECORD_WRITE = "record.write"


ADMIN_ACTIONS = frozenset(
    {
        Action.ORG_CREATE,
        Action.ORG_READ,
        Action.USER_LIST,
        Action.USER_READ,
        Action.USER_INVITE,
        Action.USER_DISABLE,
        Action.USER_UNLOCK,
        Action.ROLE_GRANT,
        Action.DELEGATION_GRANT,
        Action.DELEGATION_REVOKE,
        Action.CARE_ASSIGN,
        Action.AUDIT_READ,
    }
)
CLINICAL_ACTIONS = frozenset(Action) - ADMIN_ACTIONS


class RelationKind(StrEnum):
    """A care relationship between an actor and a patient."""

    FOLLOWS = "follows"  #: practitioner follows patient
    CONSULTATION = "consultation"  #: practitioner and patient share consultation ``ref_id``
    EEG_TECHNICIAN = "eeg_technician"  #: technician records EEG exam ``ref_id``
    EEG_INTERPRETER = "eeg_interpreter"  #: interpreter reads EEG exam ``ref_id``


class Scope(StrEnum):
    """What a delegation lets a secretary do for a practitioner."""

    CONSULTATIONS = "consultations"
    CONTACT = "contact"
    RECORDS = "records"


SCOPE_ACTIONS: dict[str, frozenset[Action]] = {
    Scope.CONSULTATIONS: frozenset(
        {Action.CONSULTATION_MANAGE, Action.PRESENCE_SEE, Action.CHAT_READ, Action.CHAT_WRITE}
    ),
    Scope.CONTACT: frozenset({Action.CONTACT_READ}),
    Scope.RECORDS: frozenset({Action.RECORD_READ}),
}

_PATIENT_SELF = frozenset(
    {
        Action.PRESENCE_SEE,
        Action.CHAT_READ,
        Action.CHAT_WRITE,
        Action.CALL_START,
        Action.CONTACT_READ,
        Action.RECORD_READ,
    }
)
_PRACTITIONER = CLINICAL_ACTIONS - {Action.EEG_STREAM}
_TECHNICIAN = frozenset(
    {
        Action.EEG_STREAM,
        Action.EEG_VIEW,
        Action.EEG_ANNOTATE,
        Action.PRESENCE_SEE,
        Action.CHAT_READ,
        Action.CHAT_WRITE,
        Action.CALL_START,
        Action.CONTACT_READ,
    }
)
_INTERPRETER = frozenset({Action.EEG_VIEW, Action.EEG_ANNOTATE})


@dataclass(frozen=True, slots=True)
class Delegation:
    """``practitioner_id`` lets ``delegate_id`` (a secretary) act within ``scopes``."""

    practitioner_id: str
    delegate_id: str
    scopes: frozenset[str]
    id: str = ""


@dataclass(frozen=True, slots=True)
class Relationship:
    """A live care relationship (``org_id`` None: the target's organisation)."""

    kind: str
    actor_id: str
    patient_id: str
    ref_id: str | None = None
    org_id: str | None = None


@dataclass(frozen=True, slots=True)
class Subject:
    """Who asks: the principal plus their live delegations."""

    user_id: str
    org_id: str
    role: str
    delegations: frozenset[Delegation] = frozenset()
    acting_for: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """What is touched. Fill the fields the action needs.

    ``user_id``/``user_role``: the account concerned (or the role granted);
    ``practitioner_id``: the delegating practitioner; ``patient_id`` and
    ``ref_id`` (consultation or EEG exam): the clinical target.
    """

    kind: str
    org_id: str
    id: str | None = None
    user_id: str | None = None
    user_role: str | None = None
    practitioner_id: str | None = None
    patient_id: str | None = None
    ref_id: str | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    """Care relationships known around the target."""

    relationships: frozenset[Relationship] = field(default_factory=frozenset)

    def has(self, kind: RelationKind, actor: str, patient: str, org: str, ref: str | None) -> bool:
        """True when such a live relationship exists (``ref`` None: any)."""
        return any(
            r.kind == kind
            and r.actor_id == actor
            and r.patient_id == patient
            and r.org_id in (None, org)
            and (ref is None or r.ref_id == ref)
            for r in self.relationships
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer: ``allowed``, a stable ``reason`` code, and whether it crossed orgs."""

    allowed: bool
    reason: str
    cross_org: bool = False

    def __bool__(self) -> bool:
        return self.allowed


def allow(reason: str) -> Decision:
    """An allowing decision."""
    return Decision(True, reason)


def deny(reason: str) -> Decision:
    """A denying decision."""
    return Decision(False, reason)


def decide(
    subject: Subject, action: Action, target: Target, facts: Facts | None = None
) -> Decision:
    """May ``subject`` do ``action`` on ``target`` given ``facts``? See the module rules."""
    facts = facts or Facts()
    if subject.role == Role.SUPERADMIN:
        return Decision(True, "superadmin", cross_org=target.org_id != subject.org_id)
    if target.org_id != subject.org_id:
        return deny("other_org")
    if action in ADMIN_ACTIONS:
        return _administration(subject, action, target)
    return _clinical(subject, action, target, facts)


def _administration(subject: Subject, action: Action, target: Target) -> Decision:
    if action == Action.ORG_CREATE:
        return deny("superadmin_only")
    if target.user_role == Role.SUPERADMIN:
        return deny("superadmin_only")
    if action == Action.ORG_READ:
        return allow("member")
    if action == Action.USER_READ and target.user_id == subject.user_id:
        return allow("self")
    if action in (Action.DELEGATION_GRANT, Action.DELEGATION_REVOKE):
        if target.user_role is not None and target.user_role != Role.SECRETARY:
            return deny("delegate_not_secretary")
        if subject.role == Role.PRACTITIONER and target.practitioner_id == subject.user_id:
            return allow("own_delegation")
    if subject.role == Role.ADMIN:
        return allow("org_admin")
    return deny("admin_only")


def _clinical(subject: Subject, action: Action, target: Target, facts: Facts) -> Decision:
    patient = target.patient_id
    if patient is None:
        return deny("no_patient")
    org, ref, me = target.org_id, target.ref_id, subject.user_id
    role = subject.role
    if role == Role.PATIENT:
        if patient == me and action in _PATIENT_SELF:
            return allow("self")
        return deny("not_own_data")
    if role == Role.PRACTITIONER:
        if action not in _PRACTITIONER:
            return deny("not_allowed_for_role")
        if _cares(facts, me, patient, org):
            return allow("care_relationship")
        return deny("no_care_relationship")
    if role in (Role.TECHNICIAN, Role.INTERPRETER):
        kind = (
            RelationKind.EEG_TECHNICIAN if role == Role.TECHNICIAN else RelationKind.EEG_INTERPRETER
        )
        allowed = _TECHNICIAN if role == Role.TECHNICIAN else _INTERPRETER
        if action not in allowed:
            return deny("not_allowed_for_role")
        if facts.has(kind, me, patient, org, ref):
            return allow("exam_assignment")
        return deny("no_exam_assignment")
    if role == Role.SECRETARY:
        return _delegated(subject, action, patient, org, facts)
    return deny("no_clinical_access")


def _cares(facts: Facts, practitioner: str, patient: str, org: str) -> bool:
    return facts.has(RelationKind.FOLLOWS, practitioner, patient, org, None) or facts.has(
        RelationKind.CONSULTATION, practitioner, patient, org, None
    )


def _delegated(subject: Subject, action: Action, patient: str, org: str, facts: Facts) -> Decision:
    for d in subject.delegations:
        if d.delegate_id != subject.user_id:
            continue
        if subject.acting_for is not None and d.practitioner_id != subject.acting_for:
            continue
        if not any(action in SCOPE_ACTIONS.get(s, frozenset()) for s in d.scopes):
            continue
        if _cares(facts, d.practitioner_id, patient, org):
            return allow("delegation")
    return deny("no_delegation")


# -- presence and conversations (rule 5) ------------------------------------------------------
#: Who takes part in staff presence and staff conversations (superadmins do not).
CHAT_STAFF_ROLES = STAFF_ROLES - {Role.SUPERADMIN}


def presence_visible(viewer: Subject, target: Subject, facts: Facts) -> Decision:
    """May ``viewer`` see ``target``'s presence? (``target`` carries its delegations.)"""
    if target.user_id == viewer.user_id:
        return allow("self")
    if target.org_id != viewer.org_id:
        return deny("other_org")
    if Role.SUPERADMIN in (viewer.role, target.role):
        return deny("superadmin_hidden")
    if viewer.role == Role.PATIENT:
        if target.role == Role.PATIENT:
            return deny("not_own_data")
        reverse = decide(
            target,
            Action.PRESENCE_SEE,
            Target("presence", target.org_id, user_id=viewer.user_id, patient_id=viewer.user_id),
            facts,
        )
        return allow("care_team") if reverse else deny("not_care_team")
    if target.role == Role.PATIENT:
        return decide(
            viewer,
            Action.PRESENCE_SEE,
            Target("presence", target.org_id, user_id=target.user_id, patient_id=target.user_id),
            facts,
        )
    return allow("colleague")


def conversation_access(
    subject: Subject,
    action: Action,
    conversation: Target,
    *,
    consultation: bool,
    is_member: bool,
    facts: Facts,
) -> Decision:
    """May ``subject`` read (``chat.read``) or write (``chat.write``) in ``conversation``?

    ``conversation`` is ``Target("conversation", org, id=..., patient_id=...,
    ref_id=<consultation>)``; ``consultation`` tells its kind. Members only;
    a consultation also needs rule 4 on its patient, so an ended care
    relationship or a revoked delegation cuts access at once.
    """
    if conversation.org_id != subject.org_id:
        return deny("other_org")
    if subject.role == Role.SUPERADMIN:
        return deny("superadmin_hidden")
    if not is_member:
        return deny("not_member")
    if consultation:
        return decide(subject, action, conversation, facts)
    if subject.role not in CHAT_STAFF_ROLES:
        return deny("staff_only")
    return allow("member")


def staff_conversation(creator: Subject, members: Iterable[Subject]) -> Decision:
    """May ``creator`` open a direct or group conversation with ``members``?"""
    if creator.role not in CHAT_STAFF_ROLES:
        return deny("staff_only")
    for member in members:
        if member.org_id != creator.org_id:
            return deny("other_org")
        if member.role not in CHAT_STAFF_ROLES:
            return deny("staff_only")
    return allow("colleagues")
