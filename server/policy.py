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

6. Display names (:func:`name_visible`): everyone sees their own; staff of an
   organisation see each other's; a practitioner, technician or interpreter
   sees the patients they have a live care relationship with, a secretary
   the patients of the practitioners delegating to them; a patient sees the
   names of those who may see theirs (their care team and its secretaries);
   an organisation's admins see everyone of their organisation. Nothing
   crosses organisations, except for superadmins (rule 1: flagged
   ``cross_org`` for the audit trail).

7. Calls (:func:`call_access`, :func:`echo_call`): a call belongs to a
   conversation and only its members take part (invite, are invited, answer,
   receive its signals), under rule 5 with ``call.start``: a consultation call
   follows rule 4 on its patient (secretaries do not take part: their
   ``consultations`` scope does not include calls), a staff conversation is
   for its staff members. A test call reaches a registered echo service
   account, whatever the organisation (it sees no record and keeps nothing);
   superadmins make none.

8. EEG exams (:func:`eeg_access`, :func:`eeg_exam_manage`, :func:`eeg_exam_read`):
   an exam's data is for its own people only, whatever the care relationships:
   its technician streams, watches and annotates; its assigned interpreters
   watch and annotate; its ordering practitioner watches. Each must still have
   the role they were assigned for (technician; interpreter or practitioner;
   practitioner). An organisation's admins create and assign exams and see
   their assignments, never their data; a practitioner creates exams they
   order for patients they care for. Superadmins neither see nor stream EEG.

9. Medical records (:func:`record_access`, :func:`report_sign`,
   :func:`record_export`): documents and reports follow rule 4 on their
   patient (a patient reads their own, never drafts; a practitioner reads and
   writes for the patients they care for; a secretary sees the record's index,
   ``record.meta``, with any delegation of a practitioner caring for the
   patient, and reads contents only with the ``records`` scope; an admin has no
   clinical access). A record attached to an EEG exam is also open to the
   exam's people: its interpreters read it and write its documents and EEG
   reports, its technician sees its index and reads and writes its documents,
   its ordering practitioner reads it; a technician or interpreter not
   assigned is refused (``not_assigned``). A draft is seen only by those who
   may write it; only its author signs it. Only a patient exports their own
   records. Superadmins see no medical content.

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
    USER_REINVITE = "user.reinvite"
    USER_RESET_MFA = "user.reset_mfa"
    USER_ENABLE = "user.enable"
    USER_FORCE_PASSWORD_RESET = "user.force_password_reset"  # noqa: S105 (an action name)
    ROLE_GRANT = "role.grant"
    DELEGATION_GRANT = "delegation.grant"
    DELEGATION_REVOKE = "delegation.revoke"
    CARE_ASSIGN = "care.assign"
    CARE_LIST = "care.list"
    DELEGATION_LIST = "delegation.list"
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
    RECORD_META = "record.meta"
    USER_DELETE = "user.delete"


ADMIN_ACTIONS = frozenset(
    {
        Action.ORG_CREATE,
        Action.ORG_READ,
        Action.USER_LIST,
        Action.USER_READ,
        Action.USER_INVITE,
        Action.USER_DISABLE,
        Action.USER_UNLOCK,
        Action.USER_REINVITE,
        Action.USER_RESET_MFA,
        Action.USER_ENABLE,
        Action.USER_FORCE_PASSWORD_RESET,
        Action.USER_DELETE,
        Action.ROLE_GRANT,
        Action.DELEGATION_GRANT,
        Action.DELEGATION_REVOKE,
        Action.DELEGATION_LIST,
        Action.CARE_ASSIGN,
        Action.CARE_LIST,
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
        {
            Action.CONSULTATION_MANAGE,
            Action.PRESENCE_SEE,
            Action.CHAT_READ,
            Action.CHAT_WRITE,
            Action.RECORD_META,
        }
    ),
    Scope.CONTACT: frozenset({Action.CONTACT_READ}),
    Scope.RECORDS: frozenset({Action.RECORD_READ, Action.RECORD_META}),
}

_PATIENT_SELF = frozenset(
    {
        Action.PRESENCE_SEE,
        Action.CHAT_READ,
        Action.CHAT_WRITE,
        Action.CALL_START,
        Action.CONTACT_READ,
        Action.RECORD_READ,
        Action.RECORD_META,
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


# -- display names (rule 6) -------------------------------------------------------------------
def name_visible(viewer: Subject, target: Subject, facts: Facts) -> Decision:
    """May ``viewer`` see ``target``'s display name (and role)?

    ``viewer`` carries its delegations (a secretary's), ``target`` its own (a
    secretary seen by a patient); ``facts`` the live care relationships of
    both. A superadmin's answer is flagged ``cross_org`` when it crosses.
    """
    if target.user_id == viewer.user_id:
        return allow("self")
    if viewer.role == Role.SUPERADMIN:
        return Decision(True, "superadmin", cross_org=target.org_id != viewer.org_id)
    if target.org_id != viewer.org_id:
        return deny("other_org")
    if viewer.role == Role.ADMIN:
        return allow("org_admin")
    if viewer.role == Role.PATIENT:
        if target.role == Role.PATIENT:
            return deny("not_own_data")
        if _knows_patient(target, viewer.user_id, facts) is not None:
            return allow("care_team")
        return deny("not_care_team")
    if target.role == Role.PATIENT:
        reason = _knows_patient(viewer, target.user_id, facts)
        return allow(reason) if reason is not None else deny("no_care_relationship")
    return allow("colleague")


def _knows_patient(staff: Subject, patient: str, facts: Facts) -> str | None:
    """Why ``staff`` knows ``patient`` (a live relationship, or a delegation), or None."""
    org = staff.org_id
    if staff.role in (Role.PRACTITIONER, Role.TECHNICIAN, Role.INTERPRETER):
        if any(
            r.actor_id == staff.user_id and r.patient_id == patient and r.org_id in (None, org)
            for r in facts.relationships
        ):
            return "care_relationship"
        return None
    if staff.role == Role.SECRETARY:
        for d in staff.delegations:
            if d.delegate_id == staff.user_id and _cares(facts, d.practitioner_id, patient, org):
                return "delegation"
    return None


# -- calls (rule 7) ---------------------------------------------------------------------------
def call_access(
    subject: Subject,
    conversation: Target,
    *,
    consultation: bool,
    is_member: bool,
    facts: Facts,
) -> Decision:
    """May ``subject`` take part in a call of ``conversation`` (invite, be invited,
    answer, resume, receive its signals)?

    ``conversation`` as for :func:`conversation_access`; the rules are rule 5's
    with ``call.start``: members only, a consultation also needs rule 4 on its
    patient (a patient calls from their own consultation; a practitioner with a
    care relationship; a secretary's delegation does not cover calls).
    """
    return conversation_access(
        subject,
        Action.CALL_START,
        conversation,
        consultation=consultation,
        is_member=is_member,
        facts=facts,
    )


def echo_call(subject: Subject, *, echo_service: bool) -> Decision:
    """May ``subject`` place a test call to an account (``echo_service``: the account
    is a registered echo service)? Any signed-in user but a superadmin, to an echo
    service only; organisations do not matter (the echo sees no data of theirs)."""
    if not echo_service:
        return deny("not_echo_service")
    if subject.role == Role.SUPERADMIN:
        return deny("superadmin_hidden")
    return allow("echo_test")


# -- EEG exams (rule 8) -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Exam:
    """The people of an EEG exam: what every EEG decision is made on."""

    id: str
    org_id: str
    patient_id: str
    ordering_id: str
    technician_id: str
    interpreters: frozenset[str] = frozenset()

    def members(self) -> frozenset[str]:
        """Everyone assigned to the exam (the patient is not a member)."""
        return frozenset({self.ordering_id, self.technician_id, *self.interpreters})


#: Roles an assigned interpreter may have (an interpreting physician may be a practitioner).
EEG_INTERPRETER_ROLES = frozenset({Role.INTERPRETER, Role.PRACTITIONER})
EEG_ACTIONS = frozenset({Action.EEG_STREAM, Action.EEG_VIEW, Action.EEG_ANNOTATE})


def eeg_access(subject: Subject, action: Action, exam: Exam) -> Decision:
    """May ``subject`` stream (``eeg.stream``), watch (``eeg.view``) or annotate
    (``eeg.annotate``) the recordings of ``exam``? (Rule 8.)"""
    if action not in EEG_ACTIONS:
        return deny("not_an_eeg_action")
    if subject.role == Role.SUPERADMIN:
        return deny("superadmin_hidden")
    if exam.org_id != subject.org_id:
        return deny("other_org")
    me, role = subject.user_id, subject.role
    if me == exam.technician_id and role == Role.TECHNICIAN:
        return allow("exam_technician")
    if me in exam.interpreters and role in EEG_INTERPRETER_ROLES:
        if action == Action.EEG_STREAM:
            return deny("not_exam_technician")
        return allow("exam_interpreter")
    if me == exam.ordering_id and role == Role.PRACTITIONER:
        if action == Action.EEG_VIEW:
            return allow("ordering_practitioner")
        return deny("not_allowed_for_role")
    if me in exam.members():
        return deny("role_changed")
    return deny("not_assigned")


def eeg_exam_manage(subject: Subject, exam: Exam, facts: Facts) -> Decision:
    """May ``subject`` create ``exam`` or change its assignments? (Rule 8.)

    ``facts``: the live care relationships of the exam's patient.
    """
    if subject.role == Role.SUPERADMIN:
        return deny("superadmin_hidden")
    if exam.org_id != subject.org_id:
        return deny("other_org")
    if subject.role == Role.ADMIN:
        return allow("org_admin")
    if subject.role == Role.PRACTITIONER and subject.user_id == exam.ordering_id:
        if _cares(facts, subject.user_id, exam.patient_id, exam.org_id):
            return allow("ordering_practitioner")
        return deny("no_care_relationship")
    return deny("not_allowed_for_role")


def eeg_exam_read(subject: Subject, exam: Exam) -> Decision:
    """May ``subject`` see ``exam`` (its assignments and recordings' list)? (Rule 8.)"""
    if subject.role == Role.SUPERADMIN:
        return deny("superadmin_hidden")
    if exam.org_id != subject.org_id:
        return deny("other_org")
    if subject.role == Role.ADMIN:
        return allow("org_admin")
    if subject.user_id in exam.members():
        return allow("exam_member")
    return deny("not_assigned")


# -- medical records (rule 9) -----------------------------------------------------------------
class RecordKind(StrEnum):
    """What a medical record is."""

    DOCUMENT = "document"  #: a file (PDF, image, EDF) with its metadata
    CONSULTATION_NOTE = "consultation_note"  #: a structured consultation note
    EEG_REPORT = "eeg_report"  #: an EEG interpretation report


RECORD_ACTIONS = frozenset({Action.RECORD_META, Action.RECORD_READ, Action.RECORD_WRITE})


@dataclass(frozen=True, slots=True)
class Record:
    """A medical record as the policy sees it: its patient, what it is attached to,
    whether it is a draft and who wrote that draft."""

    org_id: str
    patient_id: str
    kind: str = RecordKind.DOCUMENT
    consultation_id: str | None = None
    exam: Exam | None = None
    draft: bool = False
    author_id: str | None = None


def record_access(subject: Subject, action: Action, record: Record, facts: Facts) -> Decision:
    """May ``subject`` see the index entry (``record.meta``), read (``record.read``) or
    write (``record.write``) ``record``? (Rule 9.)

    ``facts``: the live care relationships of the record's patient. A draft
    needs ``record.write`` whatever the action.
    """
    if action not in RECORD_ACTIONS:
        return deny("not_a_record_action")
    if subject.role == Role.SUPERADMIN:
        return deny("superadmin_hidden")
    if record.org_id != subject.org_id:
        return deny("other_org")
    if record.draft:
        action = Action.RECORD_WRITE
    if record.exam is not None:
        by_exam = _exam_record(subject, action, record, record.exam)
        if by_exam or subject.role in (Role.TECHNICIAN, Role.INTERPRETER):
            return by_exam
    elif subject.role in (Role.TECHNICIAN, Role.INTERPRETER):
        return deny("not_assigned")
    target = Target(
        "record", record.org_id, patient_id=record.patient_id, ref_id=record.consultation_id
    )
    return decide(subject, action, target, facts)


def _exam_record(subject: Subject, action: Action, record: Record, exam: Exam) -> Decision:
    """Rule 9 for the people of the EEG exam ``record`` is attached to."""
    me, role = subject.user_id, subject.role
    document = record.kind == RecordKind.DOCUMENT
    if me in exam.interpreters and role in EEG_INTERPRETER_ROLES:
        if action != Action.RECORD_WRITE or document or record.kind == RecordKind.EEG_REPORT:
            return allow("exam_interpreter")
        return deny("not_allowed_for_role")
    if me == exam.technician_id and role == Role.TECHNICIAN:
        if action == Action.RECORD_META or document:
            return allow("exam_technician")
        return deny("not_allowed_for_role")
    if me == exam.ordering_id and role == Role.PRACTITIONER and action != Action.RECORD_WRITE:
        return allow("ordering_practitioner")
    return deny("not_assigned")


def report_sign(subject: Subject, record: Record, facts: Facts) -> Decision:
    """May ``subject`` sign the draft ``record`` (a report)? Its author only, while they
    may still write it. (Rule 9.)"""
    decision = record_access(subject, Action.RECORD_WRITE, record, facts)
    if not decision:
        return decision
    if record.author_id != subject.user_id:
        return deny("not_author")
    return allow("author")


def record_export(subject: Subject, patient_id: str, org_id: str) -> Decision:
    """May ``subject`` export everything about ``patient_id`` (the right of access)?
    The patient themself only. (Rule 9.)"""
    if org_id != subject.org_id:
        return deny("other_org")
    if subject.role == Role.PATIENT and subject.user_id == patient_id:
        return allow("self")
    return deny("not_own_data")
