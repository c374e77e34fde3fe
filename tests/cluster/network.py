"""Host networking for the local cluster: a node bridge, sysctls, and iptables chain clean-up.

Everything created here is recorded in the cluster's state so ``down`` removes exactly that.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

NODE_BRIDGE = "don-node0"
NODE_IP = "10.250.0.1"
POD_BRIDGE = "don-cni0"
POD_CIDR = "10.244.0.0/24"
ISOLATE_CHAIN = "DON-ISOLATE"
SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"}
TABLES = ("filter", "nat", "mangle")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True, check=check)


def link_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0


def chains() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for table in TABLES:
        out = _iptables("-t", table, "-S", check=False).stdout
        found[table] = {line.split()[1] for line in out.splitlines() if line.startswith("-N ")}
    return found


def setup(state_dir: Path, service_cidr: str) -> None:
    """Node bridge with a /32 node IP (the kubelet refuses a loopback node IP and the kernel has no
    `dummy` links), forwarding for pod traffic, and a FORWARD guard that keeps pod traffic inside
    the pod range (pods get no default route either)."""
    record: dict = {"links": [], "sysctls": {}, "chains_before": {t: sorted(c) for t, c in chains().items()}}
    for key, value in SYSCTLS.items():
        path = Path("/proc/sys") / key
        if path.exists():
            record["sysctls"][key] = path.read_text().strip()
            path.write_text(value)
    if not link_exists(NODE_BRIDGE):
        _ip("link", "add", NODE_BRIDGE, "type", "bridge")
        record["links"].append(NODE_BRIDGE)
    _ip("addr", "replace", f"{NODE_IP}/32", "dev", NODE_BRIDGE)
    _ip("link", "set", NODE_BRIDGE, "up")
    record["links"].append(POD_BRIDGE)  # created by the bridge CNI plugin on the first pod
    _iptables("-N", ISOLATE_CHAIN, check=False)
    _iptables("-F", ISOLATE_CHAIN)
    _iptables("-A", ISOLATE_CHAIN, "-s", POD_CIDR, "-d", POD_CIDR, "-j", "RETURN")
    _iptables("-A", ISOLATE_CHAIN, "-s", POD_CIDR, "-j", "DROP")
    if _iptables("-C", "FORWARD", "-j", ISOLATE_CHAIN, check=False).returncode != 0:
        _iptables("-I", "FORWARD", "1", "-j", ISOLATE_CHAIN)
    (state_dir / "network.json").write_text(json.dumps(record, indent=1))


def teardown(state_dir: Path) -> list[str]:
    """Undo ``setup`` and remove the KUBE-* chains the kubelet and kube-proxy created."""
    path = state_dir / "network.json"
    if not path.exists():
        return []
    record = json.loads(path.read_text())
    done = []
    for link in record["links"]:
        if link_exists(link):
            _ip("link", "delete", link, check=False)
            done.append(f"link {link}")
    before = {t: set(c) for t, c in record["chains_before"].items()}
    for table, names in chains().items():
        ours = {c for c in names - before.get(table, set())
                if c.startswith("KUBE-") or c == ISOLATE_CHAIN or c.startswith("CNI-")}
        if not ours:
            continue
        # Remove every rule that jumps into one of our chains, then flush and delete the chains.
        for line in _iptables("-t", table, "-S", check=False).stdout.splitlines():
            parts = line.split()
            if parts[:1] == ["-A"] and "-j" in parts and parts[parts.index("-j") + 1] in ours \
                    and parts[1] not in ours:
                _iptables("-t", table, "-D", *parts[1:], check=False)
        for chain in ours:
            _iptables("-t", table, "-F", chain, check=False)
        for chain in ours:
            _iptables("-t", table, "-X", chain, check=False)
        done.append(f"{table}: {len(ours)} chains")
    for key, value in record["sysctls"].items():
        (Path("/proc/sys") / key).write_text(value)
    path.unlink()
    return done
