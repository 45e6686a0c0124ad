"""The IKE SA's states, what moves it between them and what it answers in each."""

from __future__ import annotations

from enum import Enum

from .const import ExchangeType

X = ExchangeType


class State(Enum):
    """Named after what the SA waits for."""

    NEW = "new"  # nothing sent or answered yet
    WAIT_INIT_RESPONSE = "wait-init-response"  # initiator sent IKE_SA_INIT
    WAIT_AUTH_REQUEST = "wait-auth-request"  # responder answered IKE_SA_INIT (half-open)
    WAIT_AUTH_RESPONSE = "wait-auth-response"  # initiator sent IKE_AUTH
    ESTABLISHED = "established"  # waits for INFORMATIONAL (or CREATE_CHILD_SA) requests
    DELETING = "deleting"  # sent a Delete for the IKE SA, waits for the answer
    DEAD = "dead"  # waits for nothing; the endpoint forgets it


class Trigger(Enum):
    INIT_SENT = "init-sent"
    INIT_ANSWERED = "init-answered"
    AUTH_SENT = "auth-sent"
    AUTHENTICATED = "authenticated"
    DELETE_SENT = "delete-sent"
    CLOSED = "closed"
    FAILED = "failed"


S, T = State, Trigger
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (S.NEW, T.INIT_SENT): S.WAIT_INIT_RESPONSE,
    (S.NEW, T.INIT_ANSWERED): S.WAIT_AUTH_REQUEST,
    (S.WAIT_INIT_RESPONSE, T.AUTH_SENT): S.WAIT_AUTH_RESPONSE,
    (S.WAIT_AUTH_REQUEST, T.AUTHENTICATED): S.ESTABLISHED,
    (S.WAIT_AUTH_RESPONSE, T.AUTHENTICATED): S.ESTABLISHED,
    (S.ESTABLISHED, T.DELETE_SENT): S.DELETING,
    (S.ESTABLISHED, T.CLOSED): S.DEAD,
    (S.DELETING, T.CLOSED): S.DEAD,
} | {(s, T.FAILED): S.DEAD for s in State if s is not S.DEAD}

# Requests the SA answers in each state; any other request is dropped.
ANSWERS: dict[State, frozenset[int]] = {
    S.NEW: frozenset({X.IKE_SA_INIT}),
    S.WAIT_AUTH_REQUEST: frozenset({X.IKE_AUTH}),
    S.ESTABLISHED: frozenset({X.INFORMATIONAL, X.CREATE_CHILD_SA}),
    S.DELETING: frozenset({X.INFORMATIONAL, X.CREATE_CHILD_SA}),
}
SETUP_STATES = frozenset({S.NEW, S.WAIT_INIT_RESPONSE, S.WAIT_AUTH_REQUEST, S.WAIT_AUTH_RESPONSE})
