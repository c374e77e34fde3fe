"""A throw-away PKI for a local control plane, made with openssl.

Every component gets its own client identity so RBAC and the Node authorizer see the same users as
on a real cluster; keys are written 0600 into the cluster's own state directory only.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

# CN / O pairs are the identities Kubernetes' bootstrap RBAC policy already knows.
CLIENTS = {
    "admin": ("kubernetes-admin", "system:masters"),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
    "kubelet": ("system:node:localhost", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", ""),
}


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:3])} failed: {proc.stderr.strip()}")


def _signed(pki: Pki, name: str, subject: str, extensions: str) -> None:
    d = pki.dir
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=d)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "30", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)
    (d / f"{name}.csr").unlink()
    (d / f"{name}.ext").unlink()


def make_pki(directory: Path, service_ip: str, node_ips: tuple[str, ...] = (),
             apiserver_ips: tuple[str, ...] = ()) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    pki = Pki(directory)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "30", "-subj", "/CN=don-predictor-local-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    sans = ["DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local", "IP:127.0.0.1", f"IP:{service_ip}",
            *(f"IP:{ip}" for ip in apiserver_ips if ip != "127.0.0.1")]
    _signed(pki, "apiserver", "/CN=kube-apiserver",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth\nsubjectAltName={','.join(sans)}\n")
    kubelet_sans = ["DNS:localhost", "IP:127.0.0.1", *(f"IP:{ip}" for ip in node_ips)]
    _signed(pki, "kubelet-serving", "/CN=system:node:localhost/O=system:nodes",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth\nsubjectAltName={','.join(kubelet_sans)}\n")
    for name, (cn, org) in CLIENTS.items():
        subject = f"/CN={cn}" + (f"/O={org}" if org else "")
        _signed(pki, name, subject, "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n")
    # Service-account token signing key pair.
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    return pki


def write_kubeconfig(path: Path, pki: Pki, client: str, server: str, cluster: str = "don-local") -> Path:
    """A kubeconfig that refers to the PKI files by absolute path."""
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: {cluster}
  cluster:
    server: {server}
    certificate-authority: {pki.ca}
users:
- name: {client}
  user:
    client-certificate: {pki.cert(client)}
    client-key: {pki.key(client)}
contexts:
- name: {cluster}
  context:
    cluster: {cluster}
    user: {client}
current-context: {cluster}
""")
    path.chmod(0o600)
    return path
