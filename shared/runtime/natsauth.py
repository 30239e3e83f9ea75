"""Least-privilege NATS users: one per role, allowed exactly the subjects and JetStream API its role uses.

Roles: ``initializer`` (one user per source, i.e. per namespace, plus the default user that a connection
without credentials is mapped to), ``verifier``, ``ca``, ``manifest``, ``owner`` (the data owner's CLI) and
``monitor`` (read-only: stream and consumer state, service discovery, readiness; for operators, dashboards
and the local runner's status line). Every permission is derived from :mod:`contrast.subjects`, so a renamed
subject, stream or bucket changes the users with it.

This is defence against a *compromised workload*: an initializer's credentials cannot delete or purge a stream
or bucket, consume an ``ATTEST_<source>`` or ``NONCE_<source>`` queue, publish verdicts or results, write the
history, or read other clients' reply inboxes. The verifier answers nonce requests by publishing on the
requesters' inboxes: it may publish on the inboxes of the initializer users (``_INBOX.<source>.*``) and on no
other role's (roles and sources cannot share names, :func:`role_users`). It is no defence against the cluster
operator, who runs the server and can change or ignore this configuration: the protocol never relies on it
(docs/threat-model.md).

:func:`server_config` renders the ``authorization`` block (and ``no_auth_user``) in the NATS configuration
language. ``python -m contrast.runtime.natsauth [--source NS ...]`` prints it with every password as an
environment reference (``$CONTRAST_NATS_<USER>_PASSWORD``), as ``deploy/kubernetes/nats.yaml`` embeds it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from contrast import subjects
from contrast.runtime.connection import inbox_prefix
from contrast.subjects import ConsumerSpec, KVSpec

Role = Literal["initializer", "verifier", "ca", "manifest", "owner", "monitor"]
ROLES: Final[tuple[Role, ...]] = ("initializer", "verifier", "ca", "manifest", "owner", "monitor")
SERVICE_ROLES: Final[tuple[Role, ...]] = ("verifier", "ca", "manifest")

JS_API: Final = "$JS.API"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Permissions:
    """What one user may publish and subscribe to. ``allow_responses``: it may answer requests it received
    (one reply each), which is how services reply without a publish right on anyone's inbox."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False


@dataclass(frozen=True)
class NatsUser:
    """A user of the server's configuration. ``password`` is the secret itself, or, for a rendered
    deployment file, the name of the environment variable the server reads it from (``password_env``)."""

    name: str
    role: Role
    password: str = field(default="", repr=False)
    password_env: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"invalid NATS user name {self.name!r}")
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}")
        if bool(self.password) == bool(self.password_env):
            raise ValueError(f"user {self.name}: give either a password or the variable that holds it")


def _stream_admin(*streams: str) -> list[str]:
    # Every replica creates or updates the streams it uses at start (contrast.runtime.jetstream): INFO to see
    # whether it exists, CREATE or UPDATE. DELETE and PURGE are nobody's.
    return [f"{JS_API}.STREAM.{op}.{s}" for s in streams for op in ("INFO", "CREATE", "UPDATE")]


def _kv(spec: KVSpec, *, write: bool) -> list[str]:
    # Reads are STREAM.MSG.GET on the bucket's stream (the buckets are not created with direct gets, so
    # every read is answered by the stream leader: no stale read from a follower).
    out = [*_stream_admin(spec.stream), f"{JS_API}.STREAM.MSG.GET.{spec.stream}"]
    if write:
        out.append(f"$KV.{spec.bucket}.>")
    return out


def _kv_watch(spec: KVSpec) -> list[str]:
    # Listing a bucket's keys is an ephemeral ordered consumer on its stream, deleted afterwards.
    stream = spec.stream
    return [
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.*",
        f"{JS_API}.CONSUMER.DELETE.{stream}.*",
    ]


def _consumer(spec: ConsumerSpec) -> tuple[list[str], list[str]]:
    """(publish, subscribe) for one stream worker of :mod:`contrast.runtime.worker`."""
    stream, durable = spec.stream.name, spec.durable
    publish = [
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]
    if not spec.dead_letters:
        return publish, []
    # A message whose deliveries ran out is read, dead-lettered and deleted by one replica.
    publish += [f"{JS_API}.STREAM.MSG.GET.{stream}", f"{JS_API}.STREAM.MSG.DELETE.{stream}"]
    publish.append(subjects.EVENT_DEADLETTER)
    return publish, [f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}"]


def _service(user: str, service: str) -> list[str]:
    """Subscriptions of every service replica: its inboxes, NATS micro discovery and its readiness."""
    return [
        f"{inbox_prefix(user)}.>",
        *(f"$SRV.{verb}" for verb in ("PING", "INFO", "STATS")),
        f"$SRV.*.{service}",
        f"$SRV.*.{service}.*",
        subjects.health(service),
    ]


_JOIN: Final = (subjects.COORDINATOR_JOIN_NONCE, subjects.COORDINATOR_JOIN)
# The data owner's requests, which the manifest service answers.
_USER_API: Final = (
    subjects.USER_MANIFEST_SET,
    subjects.USER_MANIFEST_GET,
    subjects.USER_STATUS,
    subjects.USER_RECOVER,
    f"{subjects.USER_RECOVER}.*",
)


def permissions(role: Role, user: str, *, sources: Iterable[str] = ()) -> Permissions:
    """The permissions of ``user`` in ``role`` (for an initializer, ``user`` is also its source token).
    ``sources``: the initializer users, whose nonce streams a verifier pulls and on whose inboxes it
    answers."""
    if role == "initializer":
        results, collateral = subjects.RESULTS.stream, subjects.COLLATERAL.stream
        return Permissions(
            publish=(
                subjects.attest_nonce(user),
                subjects.attest_requested(user),
                # The fallback poll of its own result (a reconnect loses the republished core message).
                f"{JS_API}.STREAM.INFO.{results}",
                f"{JS_API}.STREAM.MSG.GET.{results}",
                # The Coordinator's collateral cache, read-only: public data, re-verified on use; a pod that
                # fetched collateral itself keeps it (a write is refused, and the cache tolerates that).
                f"{JS_API}.STREAM.INFO.{collateral}",
                f"{JS_API}.STREAM.MSG.GET.{collateral}",
            ),
            # Stored answers, as the server republishes them. Not per source: request ids are fresh per
            # attempt, and an answer is sealed to its requester and signed, so another's tells nothing secret.
            subscribe=(f"{inbox_prefix(user)}.>", subjects.ATTEST_RESULT_ANY),
        )
    if role == "verifier":
        sources = list(sources)
        # Each source's two streams: created, updated and pulled by the verifiers.
        pub: list[str] = []
        sub: list[str] = []
        for source in sources:
            for consumer in subjects.source_consumers(source):
                consumer_pub, consumer_sub = _consumer(consumer)
                pub += consumer_pub
                sub += consumer_sub
        return Permissions(
            publish=_unique(
                *pub,
                *_stream_admin(*(st.name for source in sources for st in subjects.source_streams(source))),
                # A nonce answer goes to one inbox (one token) of an initializer user, and nowhere else.
                *(f"{inbox_prefix(s)}.*" for s in sources),
                *_stream_admin(subjects.VERDICTS.name, subjects.EVENTS.name),
                subjects.ATTEST_VERIFIED,
                subjects.EVENT_ATTESTATION,
                *_kv(subjects.NONCES, write=True),
                *_kv(subjects.RESULTS, write=True),
                *_kv(subjects.HISTORY, write=False),
                *_kv(subjects.COLLATERAL, write=True),
                *_JOIN,
            ),
            subscribe=_unique(*_service(user, "verifier"), *sub, subjects.EVENT_MANIFEST_UPDATED),
            allow_responses=True,
        )
    if role == "ca":
        pub, sub = _consumer(subjects.CA_CONSUMER)
        return Permissions(
            publish=_unique(
                *pub,
                *_stream_admin(subjects.VERDICTS.name, subjects.EVENTS.name),
                subjects.EVENT_ATTESTATION,
                *_kv(subjects.RESULTS, write=True),
                *_kv(subjects.HISTORY, write=False),
                *_kv(subjects.COLLATERAL, write=True),
                *_JOIN,
            ),
            subscribe=_unique(*_service(user, "ca"), *sub, subjects.EVENT_MANIFEST_UPDATED),
            allow_responses=True,
        )
    if role == "manifest":
        return Permissions(
            publish=_unique(
                *_stream_admin(subjects.EVENTS.name),
                subjects.EVENT_STATE,
                subjects.EVENT_MANIFEST_UPDATED,
                *_kv(subjects.HISTORY, write=True),
                *_kv_watch(subjects.HISTORY),
                *_kv(subjects.NONCES, write=True),
                *_kv(subjects.COLLATERAL, write=True),
                *_JOIN,  # a stale replica's probe for, and recovery from, a ready peer
            ),
            subscribe=_unique(
                *_service(user, "manifest"),
                *_USER_API,
                *_JOIN,
                subjects.EVENT_MANIFEST_UPDATED,
            ),
            allow_responses=True,
        )
    if role == "owner":
        return Permissions(
            publish=(*_USER_API,),
            subscribe=(f"{inbox_prefix(user)}.>",),
        )
    if role == "monitor":
        return Permissions(
            publish=(
                f"{JS_API}.INFO",
                f"{JS_API}.STREAM.NAMES",
                f"{JS_API}.STREAM.LIST",
                f"{JS_API}.STREAM.INFO.*",
                f"{JS_API}.CONSUMER.NAMES.*",
                f"{JS_API}.CONSUMER.LIST.*",
                f"{JS_API}.CONSUMER.INFO.*.*",
                # Whether a history exists (the runner picks recover over a first set); it is public.
                f"{JS_API}.STREAM.MSG.GET.{subjects.HISTORY.stream}",
                "$SRV.>",
                f"{subjects.HEALTH_PREFIX}.*",
            ),
            subscribe=(f"{inbox_prefix(user)}.>",),
        )
    raise ValueError(f"unknown role {role!r}")


def _unique(*items: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def role_users(
    passwords: dict[str, str] | None = None, *, sources: Iterable[str] = (), env_passwords: bool = False
) -> list[NatsUser]:
    """One user per role (the monitor included), one initializer user per source and the default initializer
    user (:data:`contrast.subjects.DEFAULT_SOURCE`). Passwords come from ``passwords`` (by user name) or, with
    ``env_passwords``, are environment references ``CONTRAST_NATS_<USER>_PASSWORD``."""
    names: list[tuple[str, Role]] = [(r, r) for r in ROLES if r != "initializer"]
    names += [(subjects.DEFAULT_SOURCE, "initializer")]
    names += [(s, "initializer") for s in sources if s != subjects.DEFAULT_SOURCE]
    users = []
    for name, role in names:
        if env_passwords:
            users.append(NatsUser(name, role, password_env=password_env(name)))
        else:
            users.append(NatsUser(name, role, password=(passwords or {})[name]))
    if len({u.name for u in users}) != len(users):
        raise ValueError("a source may not be named like a role")
    return users


def password_env(user: str) -> str:
    return f"CONTRAST_NATS_{user.upper().replace('-', '_')}_PASSWORD"


def server_config(users: Sequence[NatsUser], *, default_user: str | None = subjects.DEFAULT_SOURCE) -> str:
    """The ``authorization`` block for ``users`` and, if given, ``no_auth_user``: a connection without
    credentials is that user (the initializer's default source), never one with more rights."""
    if default_user is not None:
        default = [u for u in users if u.name == default_user]
        if not default or default[0].role != "initializer":
            raise ValueError("the user of unauthenticated connections must be an initializer user")
    sources = [u.name for u in users if u.role == "initializer"]
    lines = ["authorization {", "  users = ["]
    for u in users:
        p = permissions(u.role, u.name, sources=sources)
        password = f"${u.password_env}" if u.password_env else json.dumps(u.password)
        lines += [
            "    {",
            f"      # role {u.role}",
            f"      user: {json.dumps(u.name)}",
            f"      password: {password}",
            "      permissions: {",
            *_allow("publish", p.publish),
            *_allow("subscribe", p.subscribe),
        ]
        if p.allow_responses:
            lines.append("        allow_responses: true")
        lines += ["      }", "    }"]
    lines += ["  ]", "}"]
    if default_user is not None:
        lines.append(f"no_auth_user: {json.dumps(default_user)}")
    return "\n".join(lines) + "\n"


def _allow(verb: str, subjects_: Sequence[str]) -> list[str]:
    items = [
        f"            {json.dumps(s)}{',' if i < len(subjects_) - 1 else ''}" for i, s in enumerate(subjects_)
    ]
    return [f"        {verb}: {{", "          allow: [", *items, "          ]", "        }"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m contrast.runtime.natsauth",
        description="Print the NATS authorization block: one least-privilege user per role (passwords as "
        "$CONTRAST_NATS_<USER>_PASSWORD references) and one initializer user per --source.",
    )
    p.add_argument("--source", action="append", default=[], help="a namespace with its own initializer user")
    args = p.parse_args(argv)
    try:
        sys.stdout.write(server_config(role_users(sources=args.source, env_passwords=True)))
    except ValueError as e:
        p.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
