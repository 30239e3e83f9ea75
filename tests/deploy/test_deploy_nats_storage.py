"""deploy/kubernetes: every stream and bucket can reach its bound on each NATS node at once.

With R3 on three nodes, each node stores a replica of everything. If the sum of the bounds exceeded the
server's JetStream file store, a flood that fills a source's ATTEST stream and ``results`` to their bounds
would make the server refuse writes to every stream, the history included, instead of refusing only the
flooded one; and a store larger than the volume would fail on a full disk.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

from contrast import subjects
from contrast.runtime.natsserver import find_nats_server, free_port
from tests.deploy.test_deploy_nats_users import docs, nats_config

_QUANTITY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def bounds_total() -> int:
    # Each source of the deployment (nats-config's `sources`, and the default one) adds its two streams.
    per_source = [
        s
        for source in subjects.parse_sources(nats_config()["sources"])
        for s in subjects.source_streams(source)
    ]
    streams = (*subjects.STREAMS, *per_source)
    return sum(s.max_bytes for s in streams) + sum(b.max_bytes for b in subjects.BUCKETS)


def file_store_as_the_server_reads_it(tmp_path: Path) -> int:
    """The ``max_file_store`` of nats.conf as nats-server itself parses it (its size suffixes)."""
    line = re.search(r"^\s*max_file_store:.*$", nats_config()["nats.conf"], re.M)
    assert line is not None
    port, monitor = free_port(), free_port()
    conf = tmp_path / "store.conf"
    jetstream = f"jetstream {{\n store_dir: {tmp_path / 'js'}\n{line.group(0)}\n}}\n"
    conf.write_text(f"port: {port}\nhttp_port: {monitor}\n{jetstream}")
    server = subprocess.Popen([find_nats_server(), "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/varz", timeout=1) as r:
                    return int(json.loads(r.read())["jetstream"]["config"]["max_storage"])
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(10)


def volume_bytes() -> int:
    (sts,) = [d for d in docs("nats.yaml") if d["kind"] == "StatefulSet"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    size = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)", claim["spec"]["resources"]["requests"]["storage"])
    assert size is not None
    return int(size.group(1)) * _QUANTITY[size.group(2)]


def test_every_bound_fits_the_file_store_and_the_store_fits_the_volume(tmp_path: Path) -> None:
    store = file_store_as_the_server_reads_it(tmp_path)
    assert bounds_total() <= store
    assert store <= volume_bytes()
