"""The authorisation policy against a table: role x action x relationship x organisation.

Each row is explicit and carries its expected answer and reason; a hypothesis
property adds that nothing is ever allowed across organisations except for a
superadmin.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.policy import (
    Action,
    Decision,
    Delegation,
    Facts,
    Relationship,
    Role,
    Subject,
    Target,
    conversation_access,
    decide,
    presence_visible,
    staff_conversation,
)

A, B = "o-a", "o-b"
ME = "u-me"
PAT = "u-pat"
DOC = "u-doc"
EXAM = "exam-1"

FOLLOWS = Relationship("follows", ME, PAT)
DOC_FOLLOWS = Relationship("follows", DOC, PAT)
CONSULT = Relationship("consultation", ME, PAT, "c-1")
TECH = Relationship("eeg_technician", ME, PAT, EXAM)
INTERP = Relationship("eeg_interpreter", ME, PAT, EXAM)
FOLLOWS_IN_B = Relationship("follows", ME, PAT, org_id=B)

REL = {
    "none": frozenset(),
    "follows": frozenset({FOLLOWS}),
    "consult": frozenset({CONSULT}),
    "tech": frozenset({TECH}),
    "interp": frozenset({INTERP}),
    "doc_follows": frozenset({DOC_FOLLOWS}),
    "follows_in_b": frozenset({FOLLOWS_IN_B}),
}
DELEG = {
    "none": frozenset(),
    "contact": frozenset({Delegation(DOC, ME, frozenset({"contact"}))}),
    "consult": frozenset({Delegation(DOC, ME, frozenset({"consultations"}))}),
    "records": frozenset({Delegation(DOC, ME, frozenset({"records", "contact"}))}),
    "for_other": frozenset({Delegation(DOC, "u-someone-else", frozenset({"records"}))}),
}


def clinical(org: str, patient: str = PAT, ref: str | None = None) -> Target:
    return Target("patient", org, patient_id=patient, ref_id=ref)


def account(org: str, user: str = "u-x", role: str = "patient", pract: str | None = None) -> Target:
    return Target("user", org, id=user, user_id=user, user_role=role, practitioner_id=pract)


# role, action, target, relationships, delegations, allowed, reason
ROWS: list[tuple[str, Action, Target, str, str, bool, str]] = [
    # -- patients: their own data only
    ("patient", Action.RECORD_READ, clinical(A, ME), "none", "none", True, "self"),
    ("patient", Action.CHAT_WRITE, clinical(A, ME), "none", "none", True, "self"),
    ("patient", Action.CALL_START, clinical(A, ME), "none", "none", True, "self"),
    ("patient", Action.RECORD_WRITE, clinical(A, ME), "none", "none", False, "not_own_data"),
    ("patient", Action.EEG_ANNOTATE, clinical(A, ME), "none", "none", False, "not_own_data"),
    ("patient", Action.RECORD_READ, clinical(A, "u-other"), "none", "none", False, "not_own_data"),
    ("patient", Action.RECORD_READ, clinical(B, ME), "none", "none", False, "other_org"),
    ("patient", Action.USER_LIST, Target("org", A), "none", "none", False, "admin_only"),
    ("patient", Action.USER_READ, account(A, ME), "none", "none", True, "self"),
    ("patient", Action.ORG_READ, Target("org", A), "none", "none", True, "member"),
    # -- practitioners: by care relationship
    ("practitioner", Action.RECORD_READ, clinical(A), "follows", "none", True, "care_relationship"),
    (
        "practitioner",
        Action.RECORD_WRITE,
        clinical(A),
        "follows",
        "none",
        True,
        "care_relationship",
    ),
    ("practitioner", Action.CALL_START, clinical(A), "consult", "none", True, "care_relationship"),
    ("practitioner", Action.EEG_VIEW, clinical(A), "follows", "none", True, "care_relationship"),
    (
        "practitioner",
        Action.RECORD_READ,
        clinical(A),
        "none",
        "none",
        False,
        "no_care_relationship",
    ),
    (
        "practitioner",
        Action.RECORD_READ,
        clinical(A),
        "doc_follows",
        "none",
        False,
        "no_care_relationship",
    ),
    ("practitioner", Action.RECORD_READ, clinical(B), "follows", "none", False, "other_org"),
    (
        "practitioner",
        Action.RECORD_READ,
        clinical(A),
        "follows_in_b",
        "none",
        False,
        "no_care_relationship",
    ),
    (
        "practitioner",
        Action.EEG_STREAM,
        clinical(A),
        "follows",
        "none",
        False,
        "not_allowed_for_role",
    ),
    ("practitioner", Action.USER_INVITE, account(A), "follows", "none", False, "admin_only"),
    (
        "practitioner",
        Action.DELEGATION_GRANT,
        account(A, "u-s", "secretary", ME),
        "none",
        "none",
        True,
        "own_delegation",
    ),
    (
        "practitioner",
        Action.DELEGATION_GRANT,
        account(A, "u-s", "secretary", DOC),
        "none",
        "none",
        False,
        "admin_only",
    ),
    (
        "practitioner",
        Action.DELEGATION_GRANT,
        account(A, "u-p", "patient", ME),
        "none",
        "none",
        False,
        "delegate_not_secretary",
    ),
    # -- technicians and interpreters: by EEG exam assignment
    (
        "technician",
        Action.EEG_STREAM,
        clinical(A, ref=EXAM),
        "tech",
        "none",
        True,
        "exam_assignment",
    ),
    ("technician", Action.EEG_VIEW, clinical(A, ref=EXAM), "tech", "none", True, "exam_assignment"),
    (
        "technician",
        Action.EEG_STREAM,
        clinical(A, ref="exam-2"),
        "tech",
        "none",
        False,
        "no_exam_assignment",
    ),
    (
        "technician",
        Action.RECORD_READ,
        clinical(A, ref=EXAM),
        "tech",
        "none",
        False,
        "not_allowed_for_role",
    ),
    (
        "technician",
        Action.EEG_VIEW,
        clinical(A, ref=EXAM),
        "interp",
        "none",
        False,
        "no_exam_assignment",
    ),
    (
        "interpreter",
        Action.EEG_ANNOTATE,
        clinical(A, ref=EXAM),
        "interp",
        "none",
        True,
        "exam_assignment",
    ),
    (
        "interpreter",
        Action.EEG_VIEW,
        clinical(A, ref=EXAM),
        "interp",
        "none",
        True,
        "exam_assignment",
    ),
    (
        "interpreter",
        Action.EEG_STREAM,
        clinical(A, ref=EXAM),
        "interp",
        "none",
        False,
        "not_allowed_for_role",
    ),
    (
        "interpreter",
        Action.CHAT_READ,
        clinical(A, ref=EXAM),
        "interp",
        "none",
        False,
        "not_allowed_for_role",
    ),
    ("interpreter", Action.EEG_VIEW, clinical(B, ref=EXAM), "interp", "none", False, "other_org"),
    # -- secretaries: only through a delegation, within its scopes
    ("secretary", Action.CONTACT_READ, clinical(A), "doc_follows", "contact", True, "delegation"),
    (
        "secretary",
        Action.RECORD_READ,
        clinical(A),
        "doc_follows",
        "contact",
        False,
        "no_delegation",
    ),
    ("secretary", Action.RECORD_READ, clinical(A), "doc_follows", "records", True, "delegation"),
    (
        "secretary",
        Action.CONSULTATION_MANAGE,
        clinical(A),
        "doc_follows",
        "consult",
        True,
        "delegation",
    ),
    ("secretary", Action.CONTACT_READ, clinical(A), "none", "contact", False, "no_delegation"),
    ("secretary", Action.CONTACT_READ, clinical(A), "doc_follows", "none", False, "no_delegation"),
    (
        "secretary",
        Action.RECORD_READ,
        clinical(A),
        "doc_follows",
        "for_other",
        False,
        "no_delegation",
    ),
    (
        "secretary",
        Action.RECORD_WRITE,
        clinical(A),
        "doc_follows",
        "records",
        False,
        "no_delegation",
    ),
    ("secretary", Action.CONTACT_READ, clinical(B), "doc_follows", "contact", False, "other_org"),
    # -- admins: administration of their organisation, no clinical access
    ("admin", Action.USER_INVITE, account(A), "none", "none", True, "org_admin"),
    (
        "admin",
        Action.USER_DISABLE,
        account(A, role="practitioner"),
        "none",
        "none",
        True,
        "org_admin",
    ),
    ("admin", Action.ROLE_GRANT, account(A, role="admin"), "none", "none", True, "org_admin"),
    (
        "admin",
        Action.ROLE_GRANT,
        account(A, role="superadmin"),
        "none",
        "none",
        False,
        "superadmin_only",
    ),
    ("admin", Action.USER_INVITE, account(B), "none", "none", False, "other_org"),
    ("admin", Action.USER_LIST, Target("org", B), "none", "none", False, "other_org"),
    ("admin", Action.ORG_CREATE, Target("org", A), "none", "none", False, "superadmin_only"),
    ("admin", Action.RECORD_READ, clinical(A), "follows", "none", False, "no_clinical_access"),
    ("admin", Action.CARE_ASSIGN, Target("care", A), "none", "none", True, "org_admin"),
    ("admin", Action.AUDIT_READ, Target("org", A), "none", "none", True, "org_admin"),
    ("admin", Action.USER_UNLOCK, account(A), "none", "none", True, "org_admin"),
    (
        "admin",
        Action.DELEGATION_REVOKE,
        account(A, "u-s", "secretary", DOC),
        "none",
        "none",
        True,
        "org_admin",
    ),
    (
        "secretary",
        Action.DELEGATION_REVOKE,
        account(A, "u-s", "secretary", DOC),
        "none",
        "none",
        False,
        "admin_only",
    ),
    (
        "practitioner",
        Action.PRESENCE_SEE,
        clinical(A),
        "consult",
        "none",
        True,
        "care_relationship",
    ),
    ("secretary", Action.PRESENCE_SEE, clinical(A), "doc_follows", "consult", True, "delegation"),
    # -- superadmin: everywhere (crossings are flagged for the audit trail)
    ("superadmin", Action.USER_LIST, Target("org", B), "none", "none", True, "superadmin"),
    ("superadmin", Action.ORG_CREATE, Target("org", A), "none", "none", True, "superadmin"),
    ("superadmin", Action.RECORD_READ, clinical(B), "none", "none", True, "superadmin"),
]


@pytest.mark.parametrize(
    ("role", "action", "target", "rels", "delegs", "allowed", "reason"),
    ROWS,
    ids=[f"{r[0]}-{r[1].value}-{r[2].org_id}-{r[3]}-{r[4]}-{i}" for i, r in enumerate(ROWS)],
)
def test_policy_row(
    role: str, action: Action, target: Target, rels: str, delegs: str, allowed: bool, reason: str
) -> None:
    subject = Subject(ME, A, role, DELEG[delegs])
    decision = decide(subject, action, target, Facts(REL[rels]))
    assert decision == Decision(
        allowed, reason, cross_org=role == "superadmin" and target.org_id != A
    )


def test_every_action_and_role_appears_in_the_table() -> None:
    assert {r[1] for r in ROWS} == set(Action)
    assert {r[0] for r in ROWS} == {r.value for r in Role}


def test_acting_for_limits_a_secretary_to_one_practitioner() -> None:
    delegs = frozenset({Delegation(DOC, ME, frozenset({"contact"}))})
    facts = Facts(frozenset({DOC_FOLLOWS}))
    assert decide(
        Subject(ME, A, "secretary", delegs, acting_for=DOC), Action.CONTACT_READ, clinical(A), facts
    ).allowed
    assert not decide(
        Subject(ME, A, "secretary", delegs, acting_for="u-other"),
        Action.CONTACT_READ,
        clinical(A),
        facts,
    ).allowed


ids = st.sampled_from(["u-me", "u-pat", "u-doc", "u-x"])
orgs = st.sampled_from(["o-a", "o-b", "o-c"])


@given(
    role=st.sampled_from([r for r in Role if r != Role.SUPERADMIN]),
    action=st.sampled_from(list(Action)),
    subject_org=orgs,
    target_org=orgs,
    patient=ids,
    user=ids,
    target_role=st.sampled_from([*(r.value for r in Role), None]),
    rels=st.frozensets(
        st.builds(
            Relationship,
            st.sampled_from(["follows", "consultation", "eeg_technician", "eeg_interpreter"]),
            ids,
            ids,
            st.sampled_from([None, EXAM]),
            st.sampled_from([None, "o-a", "o-b"]),
        ),
        max_size=4,
    ),
    scopes=st.frozensets(st.sampled_from(["contact", "consultations", "records"])),
)
def test_nothing_crosses_organisations_but_superadmin(
    role: Role,
    action: Action,
    subject_org: str,
    target_org: str,
    patient: str,
    user: str,
    target_role: str | None,
    rels: frozenset[Relationship],
    scopes: frozenset[str],
) -> None:
    subject = Subject(ME, subject_org, role, frozenset({Delegation(DOC, ME, scopes)}))
    target = Target(
        "any",
        target_org,
        id=user,
        user_id=user,
        user_role=target_role,
        practitioner_id=ME,
        patient_id=patient,
        ref_id=EXAM,
    )
    decision = decide(subject, action, target, Facts(rels))
    if subject_org != target_org:
        assert not decision.allowed
        assert decision.reason == "other_org"
    assert not decision.cross_org
    assert decide(Subject(ME, subject_org, Role.SUPERADMIN), action, target).allowed


# -- rule 5: presence and conversations ------------------------------------------------------
SEC_FOR_DOC = frozenset({Delegation(DOC, "u-sec", frozenset({"consultations"}))})

# viewer (id, org, role), target (id, org, role, delegations), relationships, allowed, reason
PRESENCE_ROWS: list[tuple[tuple[str, str, str], tuple[str, str, str], str, bool, str]] = [
    ((ME, A, "practitioner"), (ME, A, "practitioner"), "none", True, "self"),
    ((ME, A, "practitioner"), (DOC, A, "practitioner"), "none", True, "colleague"),
    ((ME, A, "secretary"), (DOC, A, "technician"), "none", True, "colleague"),
    ((ME, A, "practitioner"), (DOC, B, "practitioner"), "none", False, "other_org"),
    ((ME, A, "practitioner"), (PAT, A, "patient"), "follows", True, "care_relationship"),
    ((ME, A, "practitioner"), (PAT, A, "patient"), "none", False, "no_care_relationship"),
    ((ME, A, "admin"), (PAT, A, "patient"), "none", False, "no_clinical_access"),
    ((PAT, A, "patient"), (DOC, A, "practitioner"), "doc_follows", True, "care_team"),
    ((PAT, A, "patient"), (DOC, A, "practitioner"), "none", False, "not_care_team"),
    ((PAT, A, "patient"), ("u-sec", A, "secretary"), "doc_follows", True, "care_team"),
    ((PAT, A, "patient"), ("u-other", A, "patient"), "none", False, "not_own_data"),
    ((PAT, A, "patient"), (DOC, B, "practitioner"), "doc_follows", False, "other_org"),
    ((ME, A, "superadmin"), (DOC, A, "practitioner"), "none", False, "superadmin_hidden"),
    ((ME, A, "practitioner"), (DOC, A, "superadmin"), "none", False, "superadmin_hidden"),
]


@pytest.mark.parametrize(("viewer", "target", "rels", "allowed", "reason"), PRESENCE_ROWS)
def test_presence_row(
    viewer: tuple[str, str, str],
    target: tuple[str, str, str],
    rels: str,
    allowed: bool,
    reason: str,
) -> None:
    delegs = SEC_FOR_DOC if target[0] == "u-sec" else frozenset()
    decision = presence_visible(Subject(*viewer), Subject(*target, delegs), Facts(REL[rels]))
    assert (decision.allowed, decision.reason) == (allowed, reason)


CONSULT_CONV = Target("conversation", A, id="c-1", patient_id=PAT, ref_id="k1")
STAFF_CONV = Target("conversation", A, id="c-2")

# role, action, conversation, consultation?, member?, relationships, delegations, allowed, reason
CONV_ROWS: list[tuple[str, Action, Target, bool, bool, str, str, bool, str]] = [
    ("practitioner", Action.CHAT_WRITE, STAFF_CONV, False, True, "none", "none", True, "member"),
    ("practitioner", Action.CHAT_READ, STAFF_CONV, False, False, "none", "none", False,
     "not_member"),
    ("patient", Action.CHAT_READ, STAFF_CONV, False, True, "none", "none", False, "staff_only"),
    ("practitioner", Action.CHAT_READ, Target("conversation", B, id="c-3"), False, True, "none",
     "none", False, "other_org"),
    ("superadmin", Action.CHAT_READ, STAFF_CONV, False, True, "none", "none", False,
     "superadmin_hidden"),
    ("practitioner", Action.CHAT_WRITE, CONSULT_CONV, True, True, "consult", "none", True,
     "care_relationship"),
    ("practitioner", Action.CHAT_WRITE, CONSULT_CONV, True, True, "none", "none", False,
     "no_care_relationship"),
    ("secretary", Action.CHAT_READ, CONSULT_CONV, True, True, "doc_follows", "consult", True,
     "delegation"),
    ("secretary", Action.CHAT_READ, CONSULT_CONV, True, True, "doc_follows", "none", False,
     "no_delegation"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("role", "action", "conv", "consultation", "member", "rels", "delegs", "allowed", "reason"),
    CONV_ROWS,
)
def test_conversation_row(
    role: str,
    action: Action,
    conv: Target,
    consultation: bool,
    member: bool,
    rels: str,
    delegs: str,
    allowed: bool,
    reason: str,
) -> None:
    decision = conversation_access(
        Subject(ME, A, role, DELEG[delegs]),
        action,
        conv,
        consultation=consultation,
        is_member=member,
        facts=Facts(REL[rels]),
    )
    assert (decision.allowed, decision.reason) == (allowed, reason)


def test_staff_conversations_stay_among_staff_of_one_organisation() -> None:
    me = Subject(ME, A, "practitioner")
    assert staff_conversation(me, [Subject(DOC, A, "secretary")]).reason == "colleagues"
    assert staff_conversation(me, [Subject(DOC, B, "practitioner")]).reason == "other_org"
    assert staff_conversation(me, [Subject(PAT, A, "patient")]).reason == "staff_only"
    assert staff_conversation(Subject(PAT, A, "patient"), []).reason == "staff_only"
