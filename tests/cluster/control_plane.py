"""etcd + kube-apiserver on free 127.0.0.1 ports: a real API server for tests and the operator.

    with ControlPlane() as cp:          # or: python -m tests.cluster apiserver up|down
        cp.kubeconfig, cp.url

Self-signed PKI, RBAC (+ Node authorizer), a cluster-admin client certificate and a kubeconfig; the
processes run in their own sessions and are stopped by PID when the context exits, even on errors.
"""
from __future__ import annotations

import json
import os
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import binaries
from .pki import Pki, make_pki, write_kubeconfig
from .processes import Daemons, ProcessDied, free_port, wait_for

SERVICE_CIDR = "10.96.0.0/24"
SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service: first address of SERVICE_CIDR


class ControlPlane:
    """etcd and kube-apiserver started from the cached registry-built binaries."""

    STOP_ORDER = ["kube-apiserver", "etcd"]

    def __init__(self, state_dir: Path | None = None, log=binaries._default_log,
                 extra_apiserver_args: list[str] | None = None, node_ips: tuple[str, ...] = (),
                 address: str = "127.0.0.1"):
        self._owns_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="don-apiserver-"))
        self.log = log
        self.extra_apiserver_args = extra_apiserver_args or []
        self.node_ips = node_ips
        # Where kube-apiserver listens: loopback alone, or the local cluster's node IP so pods reach it.
        self.address = address
        self.daemons = Daemons(self.state_dir)
        self.pki = Pki(self.state_dir / "pki")
        self.kubeconfig = self.state_dir / "admin.kubeconfig"
        self.url = ""
        self._contexts: dict[str, ssl.SSLContext] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "ControlPlane":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        started = time.monotonic()
        bin_dir = binaries.kubernetes_binaries(self.log)
        etcd = binaries.etcd_binary(self.log)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        make_pki(self.pki.dir, service_ip=SERVICE_IP, node_ips=self.node_ips,
                 apiserver_ips=(self.address,))
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        data = self.state_dir / "etcd"
        data.mkdir(mode=0o700, exist_ok=True)
        self.daemons.start("etcd", [
            str(etcd), "--data-dir", str(data), "--name", "don-local",
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"don-local=http://127.0.0.1:{peer_port}",
            # Big CRDs (KServe's InferenceService schema) exceed etcd's 1.5 MiB default request size.
            "--max-request-bytes", str(8 * 1024 * 1024),
            "--quota-backend-bytes", str(2 * 1024 ** 3),
            "--unsafe-no-fsync",  # throw-away test data: durability is not worth the latency
            "--log-level", "warn",
        ])
        wait_for(lambda: _http_ok(f"{etcd_url}/health"), 30, "etcd /health",
                 lambda: self.daemons.log_tail("etcd"))
        p = self.pki
        self.url = f"https://{self.address}:{api_port}"
        self.daemons.start("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            "--etcd-servers", etcd_url,
            "--bind-address", self.address, "--advertise-address", self.address,
            "--secure-port", str(api_port), "--insecure-port", "0",
            "--client-ca-file", str(p.ca),
            "--tls-cert-file", str(p.cert("apiserver")), "--tls-private-key-file", str(p.key("apiserver")),
            "--kubelet-client-certificate", str(p.cert("apiserver-kubelet-client")),
            "--kubelet-client-key", str(p.key("apiserver-kubelet-client")),
            "--kubelet-certificate-authority", str(p.ca),
            "--kubelet-preferred-address-types", "Hostname,InternalIP",
            "--service-account-key-file", str(self.pki.dir / "sa.pub"),
            "--service-account-signing-key-file", str(p.key("sa")),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--api-audiences", "https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--authorization-mode", "Node,RBAC",
            "--enable-admission-plugins", "NodeRestriction",
            "--allow-privileged=true",
            "--profiling=false",
            # A loopback advertise address cannot be a Service endpoint; the cluster uses its node IP.
            *(["--endpoint-reconciler-type=none"] if self.address.startswith("127.") else []),
            "--v", "1",
            *self.extra_apiserver_args,
        ])
        write_kubeconfig(self.kubeconfig, p, "admin", self.url)
        wait_for(self._ready, 90, "kube-apiserver /readyz", self._failure_detail)
        self.write_info()
        self.log(f"kube-apiserver ready at {self.url} ({time.monotonic() - started:.1f} s); "
                 f"kubeconfig {self.kubeconfig}")

    def stop(self) -> None:
        self.daemons.stop_all(self.STOP_ORDER)
        if self._owns_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------------
    def _context(self, client: str) -> ssl.SSLContext:
        if client not in self._contexts:
            self._contexts[client] = self.ssl_context(client)
        return self._contexts[client]

    def ssl_context(self, client: str = "admin") -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        ctx.load_cert_chain(str(self.pki.cert(client)), str(self.pki.key(client)))
        return ctx

    def request(self, method: str, path: str, body: dict | None = None,
                content_type: str = "application/json", client: str = "admin") -> tuple[int, dict]:
        """One API call with the admin client certificate; returns (status, decoded JSON body)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self._context(client), timeout=60) as resp:
                return resp.status, _decode(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, _decode(err.read())

    def _ready(self) -> bool:
        if not self.daemons.alive("kube-apiserver"):
            raise ProcessDied("kube-apiserver exited:\n" + self.daemons.log_tail("kube-apiserver"))
        status, _ = self.request("GET", "/readyz")
        return status == 200

    def _failure_detail(self) -> str:
        return ("--- kube-apiserver log ---\n" + self.daemons.log_tail("kube-apiserver")
                + "\n--- etcd log ---\n" + self.daemons.log_tail("etcd"))

    def write_info(self) -> None:
        (self.state_dir / "cluster.json").write_text(json.dumps(
            {"url": self.url, "kubeconfig": str(self.kubeconfig), "state_dir": str(self.state_dir)}))

    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm/the operator pointed at this API server."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


def _decode(raw: bytes) -> dict:
    """JSON bodies as dicts; plain-text ones (/readyz says `ok`) as {"message": text}."""
    try:
        body = json.loads(raw or b"{}")
        return body if isinstance(body, dict) else {"items": body}
    except ValueError:
        return {"message": raw.decode(errors="replace")}


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200
