"""Who can reach a Dask cluster that mosic starts or joins.

Dask's protocol runs the functions it is sent: whoever can connect to a scheduler, worker or
nanny can run code as the user who started it. So a cluster started here listens on loopback
only, with mutual TLS from a certificate made for that run alone (``Security.temporary``: other
users of the same machine cannot connect either); an existing scheduler (``--scheduler``) is
joined with TLS when the address is ``tls://``, and a plain ``tcp://`` address off this machine
is warned about.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from pathlib import Path

import dask
from distributed import Security
from distributed.comm.addressing import parse_address, parse_host_port

LOOPBACK = "127.0.0.1"
ENCRYPTED_PROTOCOLS = ("tls", "wss")
DEFAULT_SCHEDULER_PORT = 8786


class ClusterError(Exception):
    """The cluster cannot be joined or started as asked; str() is one line."""


def is_loopback(host: str) -> bool:
    """True if ``host`` (a name or an IP) resolves to loopback addresses only."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def plaintext_exposure(address: str) -> str | None:
    """One warning line if the scheduler at ``address`` is reached unencrypted off this machine."""
    protocol, location = parse_address(address)
    if protocol in ENCRYPTED_PROTOCOLS or protocol == "inproc":
        return None
    host, port = parse_host_port(location, DEFAULT_SCHEDULER_PORT)
    if is_loopback(host):
        return None
    return (
        f"{address} is not encrypted: anyone who can reach {host}:{port} can run code "
        "as the user of its workers and read the tasks (use tls://, see docs/cluster.md#security)"
    )


def scheduler_security(
    address: str, ca_file: Path | None, cert: Path | None, key: Path | None
) -> tuple[str, Security]:
    """The address to connect to and the client's ``Security`` for an existing scheduler.

    Certificates come from the options (all three), else from Dask's configuration
    (``distributed.comm.tls.ca-file``, ``.client.cert``, ``.client.key``). A ``tls://`` address
    needs them; options given with an address without a scheme make it ``tls://``.
    """
    given = {"--tls-ca-file": ca_file, "--tls-cert": cert, "--tls-key": key}
    if any(given.values()):
        missing = [name for name, path in given.items() if path is None]
        if missing:
            needed = "TLS needs --tls-ca-file, --tls-cert and --tls-key"
            raise ClusterError(f"{needed}: missing {', '.join(missing)}")
        for name, path in given.items():
            if not path.is_file():
                raise ClusterError(f"{path}: no such file ({name})")
        if "://" not in address:
            address = f"tls://{address}"
        security = Security(
            require_encryption=True,
            tls_ca_file=str(ca_file),
            tls_client_cert=str(cert),
            tls_client_key=str(key),
        )
    else:
        security = Security()
    protocol = parse_address(address)[0]
    has_tls = bool(security.tls_ca_file and security.tls_client_cert)
    if protocol in ENCRYPTED_PROTOCOLS and not has_tls:
        raise ClusterError(
            f"{address}: a TLS scheduler needs --tls-ca-file, --tls-cert and --tls-key (or "
            "distributed.comm.tls.ca-file, .client.cert and .client.key in Dask's configuration)"
        )
    if security.require_encryption and protocol not in ENCRYPTED_PROTOCOLS:
        plain = f"{protocol}://"
        raise ClusterError(f"{address}: TLS is required but the address is {plain}; use tls://")
    if has_tls:
        try:
            security.get_connection_args("client")  # loads the files: a bad one fails here
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ClusterError(f"cannot load the TLS certificate or key: {exc}") from None
    return address, security


def local_security() -> Security:
    """Mutual TLS for a cluster started here: a key and certificate made now, held in memory."""
    return Security.temporary()


def dashboard_address(value: str) -> str:
    """``--dashboard``: ``PORT``, ``:PORT`` or ``HOST:PORT``; without a host, loopback."""
    host, _, port = value.rpartition(":")
    if not port.isdigit():
        raise ClusterError(f"--dashboard {value!r}: expected PORT, :PORT or HOST:PORT")
    return f"{host or LOOPBACK}:{port}"


def dashboard_exposure(address: str) -> str | None:
    """One warning line if the dashboard at ``address`` (``HOST:PORT``) is off loopback."""
    host = address.rpartition(":")[0]
    if is_loopback(host):
        return None
    return (
        f"the dashboard listens on {address}: anyone who can reach it sees this run's tasks, "
        "workers and logs"
    )


def served_url(host: str, port: int) -> str:
    """The URL of a dashboard bound to ``host:port`` (a wildcard bind is browsed on loopback)."""
    if host in ("", "0.0.0.0", "::"):
        host = LOOPBACK
    scheme = "https" if dask.config.get("distributed.scheduler.dashboard.tls.cert") else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/status"
