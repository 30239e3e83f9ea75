"""nats-server CPU per JetStream write and per core message: the NATS inputs of the capacity model.

The capacity model in docs/performance.md prices an attestation's NATS work as
``W × (CPU per JetStream write) + M × (CPU per core message)``. This script measures both unit costs on a
file-backed server, once with one server (R1) and once on a 3-node cluster with a replicated stream (R3),
summing the CPU of every server process:

* **JetStream write, consumed**: a message published to a work-queue stream with its PubAck awaited
  (``--in-flight`` publishes pipelined), then pulled by a durable consumer and acked. That is the life of
  an attestation request and a verdict; a KV ``create`` (the nonce mark, the result) is a write without the
  pull, and costs about the same on the server (the script prints the write alone too).
* **core message**: a publish with one subscriber (nonce request and reply, audit events, pull requests,
  acks are of this kind).

It also prints the client's CPU per JetStream publish (nats-py, this process), the part a service pays. CPU
times come from /proc in 10 ms ticks: ``--count`` must make each phase last well over that.
Usage: ``python bench/nats_cost.py [--count 20000] [--size 3000] [--in-flight 256] [--skip-cluster]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from contrast.runtime.natsserver import NatsServer, embedded_nats, nats_cluster


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measured(
    servers: list[NatsServer], count: int, body: Callable[[], Awaitable[None]]
) -> tuple[float, float]:
    """(server CPU µs, this process's CPU µs) per item while ``body`` runs."""
    s0 = sum(cpu_seconds(s.pid) for s in servers)
    c0 = time.process_time()
    await body()
    c1 = time.process_time()
    s1 = sum(cpu_seconds(s.pid) for s in servers)
    return 1e6 * (s1 - s0) / count, 1e6 * (c1 - c0) / count


async def costs(servers: list[NatsServer], args: argparse.Namespace) -> dict[str, float]:
    nc: Client = await nats.connect(servers[0].url)
    js = nc.jetstream()
    replicas = len(servers)
    payload = os.urandom(args.size)
    for name in ("WRITE", "WORK"):
        await js.add_stream(
            StreamConfig(
                name=name,
                subjects=[f"{name.lower()}.>"],
                retention=RetentionPolicy.WORK_QUEUE if name == "WORK" else RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=replicas,
            )
        )
    sem = asyncio.Semaphore(args.in_flight)

    async def publish_all(subject: str) -> None:
        async def one(i: int) -> None:
            async with sem:
                await js.publish(subject, payload, headers={"Nats-Msg-Id": f"{subject}-{i}"})

        await asyncio.gather(*(one(i) for i in range(args.count)))

    async def publish_and_consume() -> None:
        sub = await js.pull_subscribe("work.x", durable="work")
        done = 0

        async def consume() -> None:
            nonlocal done
            while done < args.count:
                with_msgs = await sub.fetch(min(256, args.count - done), timeout=5)
                for m in with_msgs:
                    await m.ack()
                done += len(with_msgs)

        await asyncio.gather(publish_all("work.x"), consume())

    result: dict[str, float] = {"replicas": replicas, "size": args.size}
    await publish_all("write.warm")
    w_server, w_client = await measured(servers, args.count, lambda: publish_all("write.x"))
    c_server, c_client = await measured(servers, args.count, publish_and_consume)
    result |= {
        "js_write_server_us": round(w_server, 1),
        "js_write_client_us": round(w_client, 1),
        "js_write_consumed_server_us": round(c_server, 1),
        "js_write_consumed_client_us": round(c_client, 1),
    }

    received = 0
    all_in = asyncio.Event()

    async def on_msg(_msg: object) -> None:
        nonlocal received
        received += 1
        if received == core_count:
            all_in.set()

    core_count = 10 * args.count
    sub_nc: Client = await nats.connect(servers[-1].url)
    await sub_nc.subscribe("core.x", cb=on_msg)
    await sub_nc.flush()
    small = os.urandom(300)

    async def core() -> None:
        for i in range(core_count):
            await nc.publish("core.x", small)
            if i % 1000 == 999:
                await nc.flush()
        await nc.flush()
        await asyncio.wait_for(all_in.wait(), 60)

    m_server, m_client = await measured(servers, core_count, core)
    result |= {"core_msg_server_us": round(m_server, 2), "core_msg_client_us": round(m_client, 2)}
    await sub_nc.close()
    await nc.close()
    return result


async def run(args: argparse.Namespace) -> None:
    layouts = [1] if args.skip_cluster else [1, 3]
    for size in layouts:
        with ExitStack() as stack:
            if size == 1:
                servers = [stack.enter_context(embedded_nats())]
            else:
                servers = stack.enter_context(nats_cluster(size))
            out = await costs(servers, args)
        out["load_average"] = [round(x, 2) for x in os.getloadavg()]  # type: ignore[assignment]
        print(
            f"R{size}: JetStream write {out['js_write_server_us']:.0f} us server CPU "
            f"(+ pull and ack: {out['js_write_consumed_server_us']:.0f} us; client "
            f"{out['js_write_consumed_client_us']:.0f} us) | core message {out['core_msg_server_us']:.1f} us "
            f"server CPU (client {out['core_msg_client_us']:.1f} us) | load {out['load_average']}",
            flush=True,
        )
        print(json.dumps(out), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=20000, help="JetStream writes (core messages: 10x)")
    p.add_argument("--size", type=int, default=3000, help="bytes per JetStream message")
    p.add_argument("--in-flight", type=int, default=256)
    p.add_argument("--skip-cluster", action="store_true", help="R1 only")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
