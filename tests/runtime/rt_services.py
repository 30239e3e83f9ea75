"""Test-only services built on the runtime, importable by tests and runnable as a process:

python tests/runtime/rt_services.py {echo,front,worker} --nats URL [runtime flags]
"""

from __future__ import annotations

import asyncio
import sys
from typing import Final

import msgspec

from contrast.errors import PolicyError, RequestError
from contrast.runtime import (
    DeliveryContext,
    Endpoint,
    Handlers,
    RequestContext,
    RetryLater,
    Runtime,
    Service,
    StreamWorker,
    main,
)
from contrast.subjects import ConsumerSpec, StreamSpec
from contrast.wire.v1 import WireStruct

ECHO: Final = "test.v1.echo"
FRONT: Final = "test.v1.front"
WORK: Final = "test.v1.work"
DONE: Final = "test.v1.done"
STARTED: Final = "test.v1.started"  # core NATS: a worker announces that it holds a job (for kill tests)


class Echo(WireStruct, frozen=True, kw_only=True):
    text: str
    delay: float = 0.0


class EchoReply(WireStruct, frozen=True, kw_only=True):
    text: str
    replica: str


class Job(WireStruct, frozen=True, kw_only=True):
    job_id: str
    kind: str = "ok"  # ok | poison | transient_once | hold | publish_then_hold
    hold: float = 0.0


class Done(WireStruct, frozen=True, kw_only=True):
    job_id: str
    replica: str
    deliveries: int


WORK_STREAM: Final = StreamSpec(
    name="TESTWORK",
    subjects=(WORK,),
    retention="workqueue",
    max_age=600,
    max_bytes=16 * 1024 * 1024,
    max_msgs=10_000,
    max_msg_size=4096,
    duplicate_window=60,
)
DONE_STREAM: Final = StreamSpec(
    name="TESTDONE",
    subjects=(DONE,),
    retention="limits",
    max_age=600,
    max_bytes=16 * 1024 * 1024,
    max_msgs=10_000,
    max_msg_size=4096,
    duplicate_window=60,
)
WORK_CONSUMER: Final = ConsumerSpec(
    stream=WORK_STREAM,
    durable="testworker",
    filter_subject=WORK,
    ack_wait=1.0,
    max_deliver=4,
    max_ack_pending=64,
    backoff=(0.1, 0.2),
)


async def build_echo(rt: Runtime) -> Handlers:
    async def echo(req: Echo, ctx: RequestContext) -> EchoReply:
        if req.text == "boom":
            raise RuntimeError("secret internal detail /etc/passwd")
        if req.text == "policy":
            raise PolicyError("debug_enabled", "debug is on")
        if req.delay:
            await asyncio.sleep(req.delay)
        return EchoReply(text=req.text, replica=ctx.replica)

    return Handlers(
        endpoints=(
            Endpoint(name="echo", subject=ECHO, request_type=Echo, handler=echo, max_bytes=1024, timeout=2.0),
        )
    )


async def build_front(rt: Runtime) -> Handlers:
    async def front(req: Echo, ctx: RequestContext) -> EchoReply:
        reply = await ctx.request(ECHO, req, EchoReply, timeout=2.0)
        return EchoReply(text=f"front:{reply.text}", replica=ctx.replica)

    return Handlers(endpoints=(Endpoint(name="front", subject=FRONT, request_type=Echo, handler=front),))


async def build_worker(rt: Runtime) -> Handlers:
    await rt.stream(DONE_STREAM)

    async def work(job: Job, ctx: DeliveryContext) -> None:
        if job.kind == "poison":
            raise RequestError("invalid_job", "this job can never succeed")
        if job.kind == "transient_once" and ctx.num_delivered == 1:
            raise RetryLater("dependency down")
        if job.kind == "hold":
            await ctx.nc.publish(
                STARTED, msgspec.msgpack.encode([job.job_id, ctx.replica, ctx.num_delivered])
            )
            await ctx.nc.flush()
            await asyncio.sleep(job.hold)
        done = Done(job_id=job.job_id, replica=ctx.replica, deliveries=ctx.num_delivered)
        if job.kind == "publish_then_hold":  # output is durable, then the replica dies before acking
            await ctx.publish(DONE, done, msg_id=job.job_id)
            await ctx.nc.publish(
                STARTED, msgspec.msgpack.encode([job.job_id, ctx.replica, ctx.num_delivered])
            )
            await ctx.nc.flush()
            await asyncio.sleep(job.hold)
        await ctx.publish(DONE, done, msg_id=job.job_id)

    return Handlers(
        workers=(
            StreamWorker(
                name="work",
                consumer=WORK_CONSUMER,
                message_type=Job,
                handler=work,
                max_in_flight=8,
                timeout=0.8,
                fetch_timeout=0.2,
            ),
        )
    )


ECHO_SERVICE: Final = Service(name="echo", version="1.0.0", build=build_echo, description="test echo")
FRONT_SERVICE: Final = Service(name="front", version="1.0.0", build=build_front, description="test front")
WORKER_SERVICE: Final = Service(name="worker", version="1.0.0", build=build_worker, description="test worker")
SERVICES: Final = {"echo": ECHO_SERVICE, "front": FRONT_SERVICE, "worker": WORKER_SERVICE}

if __name__ == "__main__":
    sys.exit(main(SERVICES[sys.argv[1]], sys.argv[2:]))
