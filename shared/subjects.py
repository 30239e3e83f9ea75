"""Every NATS subject, JetStream stream, durable consumer and KV bucket, declared once.

This module is pure data: it imports nothing from nats-py, so the CLI and tests can read it cheaply. The
runtime (``contrast.runtime.jetstream``) turns the specs into server configs and creates or updates them
at start.

Limits are deliberately finite everywhere: an unbounded stream is a disk-exhaustion attack by any client that
can publish. ``replicas`` is 1 here (single node dev/test); production overrides it with
``CONTRAST_JS_REPLICAS=3`` (see ``RuntimeConfig.js_replicas``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal

PREFIX: Final = "contrast.v1"

# --- attestation flow ---
# Nonce requests and attestation requests carry their *source* as the last subject token: the NATS user the
# initializer connects as (one per namespace where the deployment has them, DEFAULT_SOURCE otherwise). The
# server's per-user permissions let an initializer publish on its own source's subjects only, so a source's
# nonce and attestation requests go to streams of its own (NONCE_<source>, ATTEST_<source>), bounded per
# source, and the verifier can ration nonces and answer a nonce request only on its source's own inbox. The
# bare names below name the spans (one name per operation, whatever the source).
# A nonce request is stored in its source's own stream NONCE_<source> (a small work queue the verifiers pull
# at a paced rate) and names the requester's reply inbox.
ATTEST_NONCE: Final = f"{PREFIX}.attest.nonce"  # .<source>: JetStream NONCE_<source> (work queue)
ATTEST_REQUESTED: Final = f"{PREFIX}.attest.requested"  # .<source>: JetStream ATTEST_<source> (work queue)
ATTEST_REQUESTED_ANY: Final = f"{ATTEST_REQUESTED}.*"  # every source's (a wildcard to subscribe with)
DEFAULT_SOURCE: Final = "initializer"  # the source of an initializer without NATS credentials of its own
MAX_SOURCES: Final = 256  # each source has two streams and consumers of its own, which every verifier pulls
ATTEST_VERIFIED: Final = f"{PREFIX}.attest.verified"  # JetStream VERDICTS (work queue)
# The answer for a request is KV `results` key <request-id>, written on RESULTS_KV_PREFIX.<request-id>. The
# server republishes an entry on ATTEST_RESULT.<request-id> once it is stored (in a cluster: committed by a
# quorum), and only then: storing is delivering, and a write that is refused (a lost `create` race) or never
# stored is never delivered. Initializers listen there; only the server publishes there.
RESULTS_KV_PREFIX: Final = "$KV.results"  # .<request-id>; must match RESULTS.bucket (checked below)
ATTEST_RESULT: Final = f"{PREFIX}.attest.result"  # .<request-id>: RESULTS' republish destination
ATTEST_RESULT_ANY: Final = f"{ATTEST_RESULT}.*"

# --- user API (manifest service) ---
USER_MANIFEST_SET: Final = f"{PREFIX}.user.manifest.set"
USER_MANIFEST_GET: Final = f"{PREFIX}.user.manifest.get"
USER_RECOVER: Final = f"{PREFIX}.user.recover"
USER_STATUS: Final = f"{PREFIX}.user.status"  # attested state of one replica (asked before a first set)

# --- coordinator join ---
COORDINATOR_JOIN: Final = f"{PREFIX}.coordinator.join"
COORDINATOR_JOIN_NONCE: Final = f"{PREFIX}.coordinator.join.nonce"  # request/reply, ready manifest replicas

# --- events ---
EVENTS_PREFIX: Final = f"{PREFIX}.events"
EVENTS_ALL: Final = f"{EVENTS_PREFIX}.>"
EVENT_DEADLETTER: Final = f"{EVENTS_PREFIX}.deadletter"
EVENT_MANIFEST_UPDATED: Final = f"{EVENTS_PREFIX}.manifest.updated"
EVENT_STATE: Final = f"{EVENTS_PREFIX}.state"  # stale/ready transitions
EVENT_ATTESTATION: Final = f"{EVENTS_PREFIX}.attestation"  # accepted/rejected

# --- runtime ---
HEALTH_PREFIX: Final = f"{PREFIX}.health"  # .<service>: readiness endpoint of every service

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SUBJECT = re.compile(r"^[A-Za-z0-9_-]{1,128}(\.[A-Za-z0-9_-]{1,128})*$")  # literal tokens only


def _token(value: str, what: str) -> str:
    # A request id or service name becomes one subject token; '.', '*', '>' or spaces would let a caller
    # address (or subscribe to) other subjects.
    if not _TOKEN.match(value):
        raise ValueError(f"invalid {what} for a subject token: {value!r}")
    return value


def attest_nonce(source: str) -> str:
    """Subject on which an initializer of ``source`` asks for a nonce."""
    return f"{ATTEST_NONCE}.{_token(source, 'source')}"


def attest_requested(source: str) -> str:
    """Subject on which an initializer of ``source`` asks for attestation (stream ``ATTEST_<source>``)."""
    return f"{ATTEST_REQUESTED}.{_token(source, 'source')}"


def parse_sources(raw: str) -> tuple[str, ...]:
    """The initializer sources of a deployment from a comma-separated list (``CONTRAST_SOURCES``): the default
    source first, always, then each listed one once. A name that cannot be a subject token is a ValueError."""
    listed = [s.strip() for s in raw.split(",") if s.strip()]
    sources = tuple(dict.fromkeys([DEFAULT_SOURCE, *(_token(s, "source") for s in listed)]))
    if len(sources) > MAX_SOURCES:
        raise ValueError(f"{len(sources)} sources: at most {MAX_SOURCES} (each has a stream of its own)")
    for source in sources:
        source_consumers(source)  # its streams' and durables' names must be valid too (a length bound)
    return sources


def source_of(subject: str) -> str:
    """The source token of a nonce or attestation request subject (its last token)."""
    return subject.rsplit(".", 1)[-1]


def attest_result(request_id: str) -> str:
    """Subject on which the stored result for ``request_id`` is delivered (republished from its KV entry)."""
    return f"{ATTEST_RESULT}.{_token(request_id, 'request id')}"


def user_recover(replica: str) -> str:
    """Step 2 of recovery: the endpoint of the one manifest replica that issued the challenge."""
    return f"{USER_RECOVER}.{_token(replica, 'replica name')}"


def health(service: str) -> str:
    """Readiness endpoint of ``service`` (queue group: any ready replica answers)."""
    return f"{HEALTH_PREFIX}.{_token(service, 'service name')}"


SECOND: Final = 1.0
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR
KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB


@dataclass(frozen=True, kw_only=True)
class StreamSpec:
    """A JetStream stream and its bounds. Retention ``workqueue`` deletes a message once it is acked."""

    name: str
    subjects: tuple[str, ...]
    retention: Literal["workqueue", "limits", "interest"]
    max_age: float  # seconds
    max_bytes: int
    max_msgs: int
    max_msg_size: int
    duplicate_window: float  # seconds; Nats-Msg-Id dedup horizon
    replicas: int = 1
    discard: Literal["old", "new"] = "new"  # refuse new work when full rather than drop accepted work
    # Per subject: at most this many messages; with discard "new", a full subject is refused while the
    # stream's other subjects still get in. 0: no per-subject bound.
    max_msgs_per_subject: int = 0

    def __post_init__(self) -> None:
        if not _TOKEN.match(self.name):
            raise ValueError(f"invalid stream name {self.name!r}")
        if not self.subjects:
            raise ValueError(f"stream {self.name} has no subjects")
        if min(self.max_age, self.max_bytes, self.max_msgs, self.max_msg_size, self.duplicate_window) <= 0:
            raise ValueError(f"stream {self.name}: every bound must be positive")
        if self.duplicate_window > self.max_age:
            raise ValueError(f"stream {self.name}: duplicate window exceeds max age")
        if not 0 <= self.max_msgs_per_subject <= self.max_msgs:
            raise ValueError(f"stream {self.name}: max_msgs_per_subject out of range")
        if self.max_msgs_per_subject and self.discard != "new":
            raise ValueError(f"stream {self.name}: a per-subject bound refuses new messages (discard new)")


@dataclass(frozen=True, kw_only=True)
class ConsumerSpec:
    """A durable pull consumer shared by all replicas of one service."""

    stream: StreamSpec
    durable: str
    filter_subject: str
    ack_wait: float  # seconds before an unacked message is redelivered (a dead replica's work)
    max_deliver: int  # then the server emits a MAX_DELIVERIES advisory; we dead-letter it
    max_ack_pending: int  # bound on in-flight work across all replicas
    backoff: tuple[float, ...] = field(default=())  # nak delays by delivery count; last one repeats
    # False for requests that are worthless once late (the requester has asked again): a message that cannot
    # be handled is dropped (terminated and counted) instead of being dead-lettered to EVENTS.
    dead_letters: bool = True
    # The name of a delivery's span: one per operation, whatever the source (default: the filter subject
    # without a trailing source wildcard).
    operation: str = ""

    @property
    def span_name(self) -> str:
        return self.operation or self.filter_subject.removesuffix(".*")

    def __post_init__(self) -> None:
        if not _TOKEN.match(self.durable):
            raise ValueError(f"invalid durable name {self.durable!r}")
        if self.ack_wait <= 0 or self.max_deliver < 1 or self.max_ack_pending < 1:
            raise ValueError(f"consumer {self.durable}: bounds must be positive")
        if any(d < 0 for d in self.backoff):
            raise ValueError(f"consumer {self.durable}: negative backoff")


@dataclass(frozen=True, kw_only=True)
class KVSpec:
    """A JetStream key-value bucket. With ``republish`` (a subject prefix), the server republishes every
    stored entry, key ``k``, on ``<republish>.k`` after storing it."""

    bucket: str
    history: int
    ttl: float  # seconds; 0 = keep (only for content-addressed, bounded data)
    max_value_size: int
    max_bytes: int
    replicas: int = 1
    republish: str = ""

    def __post_init__(self) -> None:
        if not _TOKEN.match(self.bucket):
            raise ValueError(f"invalid bucket name {self.bucket!r}")
        if not 1 <= self.history <= 64 or self.ttl < 0 or self.max_value_size <= 0 or self.max_bytes <= 0:
            raise ValueError(f"bucket {self.bucket}: invalid bounds")
        if self.republish and (self.republish.startswith("$") or not _SUBJECT.match(self.republish)):
            raise ValueError(f"bucket {self.bucket}: invalid republish subject {self.republish!r}")

    @property
    def subject_prefix(self) -> str:
        """The prefix of the subjects the bucket's entries are written on (``$KV.<bucket>``)."""
        return f"$KV.{self.bucket}"

    @property
    def stream(self) -> str:
        """The JetStream stream that holds the bucket (``KV_<bucket>``)."""
        return f"KV_{self.bucket}"


# Attestation requests wait in a stream of their source's own, ATTEST_<source>, for the same reason as nonce
# requests (below): the NATS server queues every publish to a stream in that stream's ingest queue before it
# can refuse it, so one stream for every source would let a source flooding at full speed hold up or drop
# every other source's requests (bench/flood.py, class attest-flood; docs/performance.md). Evidence bundles
# (SNP report + VCEK chain, or a TDX quote with PCK chain) are a few KiB; 256 KiB leaves room for collateral
# carried in the bundle. A source holds at most 2,000 requests and 64 MiB (discard new): a rollout of 2,000
# pods in one namespace queues at once, and a flooding namespace is refused on its own stream. Every source's
# stream reserves its 64 MiB of the servers' file store (docs/operations.md, "Storage"). Ten minutes is far
# beyond any nonce lifetime, so an older request could never be answered anyway. Dedup covers client retries
# of the same request id, and turns a replay of a captured request (same id) into a no-op on the server.
ATTEST_STREAM_PREFIX: Final = "ATTEST_"
ATTEST_SHARE: Final = 2_000  # requests one source may have waiting


def _source_stream(
    prefix: str, subject: str, *, share: int, max_age: float, max_bytes: int, max_msg_size: int
) -> StreamSpec:
    # One source's requests: its one subject, a work queue of at most `share` requests (discard new); a
    # request id sent again is deduplicated for up to two minutes.
    return StreamSpec(
        name=f"{prefix}{source_of(subject)}",
        subjects=(subject,),
        retention="workqueue",
        max_age=max_age,
        max_bytes=max_bytes,
        max_msgs=share,
        max_msg_size=max_msg_size,
        duplicate_window=min(max_age, 2 * MINUTE),
        max_msgs_per_subject=share,
    )


def attest_stream(source: str) -> StreamSpec:
    """Stream ``ATTEST_<source>``: the waiting attestation requests of one source."""
    return _source_stream(
        ATTEST_STREAM_PREFIX,
        attest_requested(source),
        share=ATTEST_SHARE,
        max_age=10 * MINUTE,
        max_bytes=64 * MiB,
        max_msg_size=256 * KiB,
    )


# Nonce requests (a few dozen bytes naming the requester's inbox) wait in a stream of their source's own until
# a verifier pulls them, at its paced rate per source (CONTRAST_NONCE_PULL_RATE). One stream per source, not
# one shared stream with a per-subject bound: the NATS server queues every publish to a stream in that
# stream's ingest queue before it can refuse it, so a source flooding at full speed (100,000s per second)
# would fill a shared stream's queue (up to 100,000 messages, then refused or dropped) and every other
# source's request would wait behind it for seconds, or be dropped (bench/flood.py --nats 3; docs/
# performance.md). With a stream each, the flood fills only its own queue. A source holds at most 8 requests
# (discard new): a burst of one namespace's pods gets in as the verifiers drain it. A request older than 2 s
# is worthless: its pod has asked again after its 1 s nonce timeout. File storage like every stream: a
# memory stream and its consumer would vanish with a restarted server, and nothing re-creates them while the
# replicas run. Nothing deduplicates (no msg id). The verifiers create the streams of the sources they are
# configured with (CONTRAST_SOURCES); a source without one is answered "no responders".
NONCE_STREAM_PREFIX: Final = "NONCE_"
NONCE_SHARE: Final = 8  # requests one source may have waiting


def nonce_stream(source: str) -> StreamSpec:
    """Stream ``NONCE_<source>``: the waiting nonce requests of one source."""
    return _source_stream(
        NONCE_STREAM_PREFIX,
        attest_nonce(source),
        share=NONCE_SHARE,
        max_age=2 * SECOND,
        max_bytes=64 * KiB,
        max_msg_size=1 * KiB,
    )


# Signed verdicts are small (claims + signature); same lifetime reasoning as ATTEST_<source>.
VERDICTS: Final = StreamSpec(
    name="VERDICTS",
    subjects=(ATTEST_VERIFIED,),
    retention="workqueue",
    max_age=10 * MINUTE,
    max_bytes=256 * MiB,
    max_msgs=100_000,
    max_msg_size=64 * KiB,
    duplicate_window=2 * MINUTE,
)

# Audit trail of events (dead letters keep the original payload, so their size bound is ATTEST_<source>'s).
EVENTS: Final = StreamSpec(
    name="EVENTS",
    subjects=(EVENTS_ALL,),
    retention="limits",
    max_age=7 * DAY,
    max_bytes=1 * GiB,
    max_msgs=1_000_000,
    max_msg_size=512 * KiB,
    duplicate_window=2 * MINUTE,
    discard="old",  # an audit log keeps the newest entries when full
)

# Attestation consumers (limits from the figures of bench/attest_throughput.py):
# - ack_wait 5 s: a verification costs ~0.5 ms of CPU and a replica fetches only as many messages as it has
#   free slots, so a live replica acks within milliseconds even under overload; 5 s is how long a SIGKILLed
#   replica's work waits before another replica gets it. It is half the nonce lifetime (10 s), so redelivered
#   work is usually still fresh. The worker timeout (4 s) stays below it, so a slow but live handler is never
#   raced by a redelivery.
# - max_deliver 5 with backoff (0.5, 2, 5, 10) s: transient faults (collateral, a replica re-joining) get
#   ~18 s of retries; a poison message (garbage, forged verdict) is terminated at once and dead-lettered.
# - max_ack_pending 256: in-flight work across all replicas. With 64 slots per replica it feeds 4 replicas
#   fully; a flood of garbage occupies at most 256 slots while it is dead-lettered, so it delays valid work
#   by a bounded amount instead of starving it.
ATTEST_MAX_DELIVER: Final = 5


def verifier_consumer(source: str) -> ConsumerSpec:
    """The verifiers' durable consumer ``verify-<source>`` on stream ``ATTEST_<source>``."""
    stream = attest_stream(source)
    return ConsumerSpec(
        stream=stream,
        durable=f"verify-{source}",
        filter_subject=stream.subjects[0],
        ack_wait=5 * SECOND,
        max_deliver=ATTEST_MAX_DELIVER,
        max_ack_pending=256,
        backoff=(0.5, 2.0, 5.0, 10.0),
        operation=ATTEST_REQUESTED,
    )


# Nonce requests: issuing one costs an HMAC. ack_wait 2 s: a request a dead replica held is past its use by
# then; one not-ready replica's nak hands it to another within 50 ms. Never dead-lettered (dead_letters):
# a malformed or misaddressed request is dropped and counted, not copied into the EVENTS audit log. The
# durable is named after the source too, so that each source's backlog and outcomes are metrics of their own.
def nonce_consumer(source: str) -> ConsumerSpec:
    """The verifiers' durable consumer ``nonce-<source>`` on stream ``NONCE_<source>``."""
    stream = nonce_stream(source)
    return ConsumerSpec(
        stream=stream,
        durable=f"nonce-{source}",
        filter_subject=stream.subjects[0],
        ack_wait=2 * SECOND,
        max_deliver=3,
        max_ack_pending=256,
        backoff=(0.05, 0.2),
        dead_letters=False,
        operation=ATTEST_NONCE,
    )


# Issuance costs a P-384 leaf signature, an HPKE seal and two KV/JetStream writes: same reasoning as above.
CA_CONSUMER: Final = ConsumerSpec(
    stream=VERDICTS,
    durable="ca",
    filter_subject=ATTEST_VERIFIED,
    ack_wait=5 * SECOND,
    max_deliver=5,
    max_ack_pending=256,
    backoff=(0.5, 2.0, 5.0, 10.0),
)

# Nonces live 10 s (contrast.attestation.nonce); a single-use mark is a KV create that must outlive the nonce,
# so the 2 min TTL leaves a wide margin for clock skew. 1 KiB values hold a 32-byte request digest.
NONCES: Final = KVSpec(
    bucket="nonces", history=1, ttl=2 * MINUTE, max_value_size=1 * KiB, max_bytes=256 * MiB
)

# Results are sealed to the requester and signed (safe to store); an initializer that reconnects within 10 min
# finds its answer. The TTL also exceeds the CA's verdict max age (2 min), so idempotency per request id
# covers every verdict the CA would still accept. A result is ~8 KiB (statement, sealed bundle). Every stored
# entry is republished on ATTEST_RESULT.<request-id>, where the initializer waits for it.
RESULTS: Final = KVSpec(
    bucket="results",
    history=1,
    ttl=10 * MINUTE,
    max_value_size=128 * KiB,
    max_bytes=1 * GiB,
    republish=ATTEST_RESULT,
)

# Content-addressed manifest history (manifests/<sha256>, policies/<sha256>, transitions/<sha256>, latest):
# never expires; history 64 keeps every CAS revision of `latest` for audit.
HISTORY: Final = KVSpec(bucket="history", history=64, ttl=0, max_value_size=1 * MiB, max_bytes=4 * GiB)

# Collateral cache (VCEKs, certificate chains, CRLs, TCB info, QE identity) shared by every replica, keyed by
# what an entry identifies; entries are re-verified on every use. No TTL: an entry's lifetime is the vendor's
# own (contrast.collateral.source), and a cache pre-seeded for a cluster without egress must not vanish.
COLLATERAL: Final = KVSpec(bucket="collateral", history=1, ttl=0, max_value_size=256 * KiB, max_bytes=1 * GiB)

# The fixed streams and consumers; each source adds its own (source_streams, source_consumers).
STREAMS: Final[tuple[StreamSpec, ...]] = (VERDICTS, EVENTS)
CONSUMERS: Final[tuple[ConsumerSpec, ...]] = (CA_CONSUMER,)


def source_streams(source: str) -> tuple[StreamSpec, ...]:
    """The streams of one source: its nonce requests and its attestation requests."""
    return (nonce_stream(source), attest_stream(source))


def source_consumers(source: str) -> tuple[ConsumerSpec, ...]:
    """The verifiers' consumers of one source's streams."""
    return (nonce_consumer(source), verifier_consumer(source))


BUCKETS: Final[tuple[KVSpec, ...]] = (NONCES, RESULTS, HISTORY, COLLATERAL)

if RESULTS.subject_prefix != RESULTS_KV_PREFIX:  # pragma: no cover - a definition error, caught on import
    raise RuntimeError("RESULTS_KV_PREFIX must be the subject prefix of KV `results`")
