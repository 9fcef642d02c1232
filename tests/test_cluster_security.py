"""Who can reach the clusters mosic starts or joins (real processes and servers, on loopback).

A local cluster listens on loopback only and its printed dashboard is the one served; an
existing scheduler is joined over TLS with certificates of the cluster's CA, and refuses a
plain-TCP client and a certificate of another CA.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import dask
import psutil
import pytest
from distributed import Client, Security

from mosic.pipeline.cluster import ClusterConfig, dashboard_url, dask_client, exposure_warnings
from mosic.pipeline.cluster_security import (
    ClusterError,
    dashboard_address,
    plaintext_exposure,
    scheduler_security,
)
from mosic.stages.synthetic import make_video, write_video_file
from mosic.store_schema import TrackStore
from tests.processes import finish, mosic, wait_for_line
from tests.store_compare import assert_same_content
from tests.tls_files import make_ca, make_certificate

SETTINGS = ["--grid", "4", "--horizon", "9", "--size", "128x96", "--batch-videos", "1"]
LOOPBACK = {"127.0.0.1", "::1"}
VIDEOS = 3


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    src = tmp_path_factory.mktemp("videos")
    for i in range(VIDEOS):
        write_video_file(make_video(i, num_frames=32, height=96, width=128), src / f"v{i}.mp4")
    return src


def _listening(processes: list[psutil.Process]) -> dict[int, list[tuple[str, int]]]:
    """The listening TCP sockets of each process: pid -> [(ip, port)]."""
    found = {}
    for process in processes:
        conns = process.net_connections(kind="inet")
        found[process.pid] = [c.laddr[:2] for c in conns if c.status == psutil.CONN_LISTEN]
    return found


@contextmanager
def _paused(processes: list[psutil.Process]):
    """SIGSTOP the processes (a run's workers: its work waits, its servers stay), then resume."""
    for process in processes:
        process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for process in processes:
            process.send_signal(signal.SIGCONT)


def _fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as page:
            return page.status, page.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


@pytest.fixture(scope="module")
def local_run(videos, tmp_path_factory):
    """An extraction on a local cluster of 2 workers, its dashboard asked on a port in use.

    While its workers are paused (the run alive, its servers up): every listening socket of
    every process of the run, and what its printed dashboard address serves.
    """
    path = tmp_path_factory.mktemp("local") / "s.zarr"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        asked = busy.getsockname()[1]
        run = mosic(
            "extract-tracks",
            videos,
            "--store",
            path,
            *SETTINGS,
            "--workers",
            2,
            "--dashboard",
            f":{asked}",
        )
        scheduler = wait_for_line(run, "dask scheduler:").split(": ", 1)[1]
        url = wait_for_line(run, "dask dashboard:").split(": ", 1)[1]
    coordinator = psutil.Process(run.pid)
    children = coordinator.children(recursive=True)
    with _paused(children):
        status, page = _fetch(url)
        sockets = _listening([coordinator, *children])
    code, out = finish(run)
    assert code == 0, out
    return {
        "store": path,
        "scheduler": scheduler,
        "url": url,
        "asked": asked,
        "status": status,
        "page": page,
        "sockets": sockets,
        "out": out,
    }


def test_a_local_cluster_listens_on_loopback_only(local_run):
    sockets = local_run["sockets"]
    # The coordinator holds the scheduler, its dashboard and two nannies; each worker its
    # server and its HTTP server.
    assert len(sockets) >= 3, sockets
    assert sum(len(found) >= 2 for found in sockets.values()) >= 3, sockets
    everything = [address for found in sockets.values() for address in found]
    assert {ip for ip, _ in everything} <= LOOPBACK, everything
    assert local_run["scheduler"].startswith("tls://127.0.0.1:")  # and encrypted


def test_the_printed_dashboard_is_the_one_served(local_run):
    url, asked = local_run["url"], local_run["asked"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/status")
    # The port asked for was in use: the dashboard moved, and the address printed moved too.
    assert f":{asked}/" not in url
    assert local_run["status"] == 200 and b"Dask" in local_run["page"]


def test_no_dashboard_serves_nothing_but_a_health_check():
    with dask_client(ClusterConfig(workers=1, dashboard=None)) as client:
        assert dashboard_url(client) is None
        server = client.cluster.scheduler.http_server
        assert server.address == "127.0.0.1"
        base = f"http://127.0.0.1:{server.port}"
        assert _fetch(f"{base}/status")[0] == 404
        assert _fetch(f"{base}/info/main/workers.html")[0] == 404
        assert _fetch(f"{base}/health") == (200, b"ok")


def test_dashboard_addresses():
    assert dashboard_address(":8787") == dashboard_address("8787") == "127.0.0.1:8787"
    assert dashboard_address("0.0.0.0:8787") == "0.0.0.0:8787"  # asked for: warned of
    with pytest.raises(ClusterError, match="expected PORT"):
        dashboard_address("localhost")
    [warning] = exposure_warnings(ClusterConfig(dashboard="0.0.0.0:8787"))
    assert warning.startswith("the dashboard listens on 0.0.0.0:8787: anyone who can reach")
    assert exposure_warnings(ClusterConfig(dashboard=":8787")) == []


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA with certificates for a scheduler, a worker and a client; and another CA's."""
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_cert, ca_key = make_ca(folder, "cluster-ca")
    files = {"ca": ca}
    for name in ("scheduler", "worker", "client"):
        files[name] = make_certificate(folder, name, ca_cert, ca_key)
    _, other_cert, other_key = make_ca(folder, "other-ca")
    files["stranger"] = make_certificate(folder, "stranger", other_cert, other_key)
    return files


def _tls_args(pki, role: str) -> list[str]:
    cert, key = pki[role]
    return ["--tls-ca-file", str(pki["ca"]), "--tls-cert", str(cert), "--tls-key", str(key)]


def _dask(command: str, *args: str) -> subprocess.Popen:
    module = f"distributed.cli.dask_{command}"
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@pytest.fixture(scope="module")
def tls_scheduler(pki, tmp_path_factory):
    """``dask scheduler`` and one ``dask worker`` with TLS on loopback, as docs/cluster.md says."""
    info = tmp_path_factory.mktemp("scheduler") / "scheduler.json"
    loopback = ["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]
    scheduler = _dask(
        "scheduler",
        *loopback,
        "--port",
        "0",
        "--protocol",
        "tls",
        "--no-dashboard",
        "--scheduler-file",
        str(info),
        *_tls_args(pki, "scheduler"),
    )
    processes = [scheduler]
    try:
        deadline = time.monotonic() + 120
        while not info.exists():
            assert scheduler.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        processes.append(
            _dask(
                "worker",
                address,
                *loopback,
                "--nthreads",
                "1",
                "--no-dashboard",
                *_tls_args(pki, "worker"),
            )
        )
        cert, key = pki["client"]
        security = Security(
            tls_ca_file=str(pki["ca"]),
            tls_client_cert=str(cert),
            tls_client_key=str(key),
            require_encryption=True,
        )
        with Client(address, security=security, timeout=60) as client:
            client.wait_for_workers(1, timeout=120)
            servers = [psutil.Process(p.pid) for p in processes]
            servers += [c for p in servers for c in p.children(recursive=True)]
            yield address, _listening(servers)
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


def test_extraction_through_a_tls_scheduler(tls_scheduler, pki, videos, local_run, tmp_path):
    address, sockets = tls_scheduler
    everything = [a for found in sockets.values() for a in found]
    assert everything and {ip for ip, _ in everything} <= LOOPBACK  # the test's servers, too
    path = tmp_path / "s.zarr"
    run = mosic(
        "extract-tracks",
        videos,
        "--store",
        path,
        *SETTINGS,
        "--scheduler",
        address,
        *_tls_args(pki, "client"),
    )
    code, out = finish(run)
    assert code == 0, out
    assert "warning" not in out and f"dask scheduler: {address}" in out
    assert len(TrackStore.open(path).keys()) == VIDEOS
    assert_same_content(path, local_run["store"])


def test_dask_configuration_gives_the_certificates(tls_scheduler, pki):
    address, _ = tls_scheduler
    cert, key = pki["client"]
    tls = {
        "distributed.comm.tls.ca-file": str(pki["ca"]),
        "distributed.comm.tls.client.cert": str(cert),
        "distributed.comm.tls.client.key": str(key),
    }
    with dask.config.set(tls):
        with dask_client(ClusterConfig(scheduler=address)) as client:
            assert len(client.scheduler_info()["workers"]) == 1


def test_a_plain_tcp_client_is_refused(tls_scheduler):
    address, _ = tls_scheduler
    plain = address.replace("tls://", "tcp://")
    # Refused, not timed out: the server closes the connection at once.
    with pytest.raises(OSError, match=r"\(closed\)"):
        Client(plain, timeout=30)


def test_a_certificate_of_another_ca_is_refused(tls_scheduler, pki):
    address, _ = tls_scheduler
    cert, key = pki["stranger"]
    security = Security(
        tls_ca_file=str(pki["ca"]),
        tls_client_cert=str(cert),
        tls_client_key=str(key),
        require_encryption=True,
    )
    # Refused in the handshake (an "unknown ca" alert, or its closed connection), not timed out.
    with pytest.raises(OSError, match="SSL"):
        Client(address, security=security, timeout=30)


def test_tls_options_are_checked_before_connecting(pki, tmp_path):
    ca, (cert, key) = pki["ca"], pki["client"]
    with pytest.raises(ClusterError, match="missing --tls-key"):
        scheduler_security("tls://127.0.0.1:8786", ca, cert, None)
    with pytest.raises(ClusterError, match=f"{tmp_path / 'no.pem'}: no such file"):
        scheduler_security("tls://127.0.0.1:8786", ca, tmp_path / "no.pem", key)
    with pytest.raises(ClusterError, match="needs --tls-ca-file"):
        scheduler_security("tls://127.0.0.1:8786", None, None, None)
    with pytest.raises(ClusterError, match="use tls://"):
        scheduler_security("tcp://127.0.0.1:8786", ca, cert, key)
    with pytest.raises(ClusterError, match="cannot load"):
        scheduler_security("tls://127.0.0.1:8786", ca, cert, ca)  # a certificate as the key
    address, security = scheduler_security("127.0.0.1:8786", ca, cert, key)
    assert address == "tls://127.0.0.1:8786" and security.require_encryption
    with pytest.raises(ClusterError, match="are for --scheduler"):
        ClusterConfig(tls_ca_file=str(ca))


def test_plaintext_exposure_is_for_unencrypted_addresses_off_this_machine():
    for address in ("tcp://10.1.2.3:8786", "10.1.2.3:8786", "tcp://[2001:db8::1]:8786"):
        assert "is not encrypted" in plaintext_exposure(address)
    for address in (
        "tls://10.1.2.3:8786",
        "tcp://127.0.0.1:8786",
        "tcp://localhost:8786",
        "tcp://[::1]:8786",
    ):
        assert plaintext_exposure(address) is None


def test_a_tcp_scheduler_off_this_machine_is_warned_of_in_one_line(videos, tmp_path):
    # A name that resolves nowhere: nothing is contacted, the connection fails fast.
    address = "tcp://node-b.invalid:8786"
    env = {**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}
    run = mosic(
        "extract-tracks",
        videos,
        "--store",
        tmp_path / "s.zarr",
        *SETTINGS,
        "--scheduler",
        address,
        env=env,
    )
    code, out = finish(run)
    assert code == 2, out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {address} is not encrypted: anyone who can reach node-b.invalid:8786 can run "
        "code as the user of its workers and read the tasks (use tls://, see "
        "docs/cluster.md#security)"
    ]
    assert f"error: cannot connect to the Dask scheduler at {address}" in out
