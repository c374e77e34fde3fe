"""A real one-node Kubernetes 1.20 cluster from registry packages (no Docker, no kind, no downloads).

    python -m tests.cluster up | status | images | down

etcd -> kube-apiserver (node IP 10.250.0.1) -> controller-manager + scheduler -> containerd (Debian)
-> kubelet (node ``localhost``) -> kube-proxy (iptables), with the bridge CNI plugin for pods
(10.244.0.0/24) and Services on 10.96.0.0/24. No cluster DNS (no CoreDNS image): pods reach Services
by ClusterIP or ``*_SERVICE_HOST``. State, logs and hostPath volumes live in one state directory;
``down`` stops everything by PID and removes the links, mounts and iptables chains it created.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import binaries, images, network
from .control_plane import SERVICE_CIDR, ControlPlane
from .pki import write_kubeconfig
from .processes import Daemons, free_port, wait_for

HOST_PACKAGES = ["containerd", "runc", "containernetworking-plugins", "iptables", "conntrack", "gcc",
                 "libc6-dev", "ethtool", "socat", "kmod", "debootstrap"]
PAUSE_IMAGE = "don-predictor/pause:3.4"
CNI_BIN_DIR = "/usr/lib/cni"
STOP_ORDER = ["kube-scheduler", "kube-controller-manager", "kube-proxy", "kubelet", "containerd",
              "kube-apiserver", "etcd"]


class LocalCluster:
    def __init__(self, state_dir: Path, log=binaries._default_log):
        self.state_dir = state_dir
        self.log = log
        self.daemons = Daemons(state_dir) if state_dir.exists() else None
        self.cp = ControlPlane(state_dir=state_dir, log=log, node_ips=(network.NODE_IP,),
                               address=network.NODE_IP)
        self.cp._owns_dir = False
        self.sock = state_dir / "containerd" / "containerd.sock"
        self.volumes = state_dir / "volumes"

    # -- paths -----------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig

    def ctr(self) -> list[str]:
        return ["ctr", "--address", str(self.sock), "-n", "k8s.io"]

    # -- up --------------------------------------------------------------------------------------
    def up(self) -> None:
        if os.geteuid() != 0:
            raise binaries.BuildError("the local cluster needs root (network links, mounts, containerd)")
        if self.state_dir.exists():
            existing = Daemons(self.state_dir)
            if any(existing.alive(n) for n in existing.names()):
                raise RuntimeError(f"a cluster is already running from {self.state_dir}; "
                                   "`python -m tests.cluster down` first")
            self.down(quiet=True)
            shutil.rmtree(self.state_dir, ignore_errors=True)
        started = time.monotonic()
        binaries.apt_install(HOST_PACKAGES, self.log)
        bin_dir = binaries.kubernetes_binaries(self.log)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.daemons = Daemons(self.state_dir)
        try:
            network.setup(self.state_dir, SERVICE_CIDR)
            self.cp.daemons = self.daemons
            self.cp.start()
            self._start_controllers(bin_dir)
            self._start_containerd()
            self._import_pause()
            self._start_kubelet(bin_dir)
            self._start_kube_proxy(bin_dir)
            self._wait_usable()
        except BaseException:
            self.log("start failed; tearing down what was started")
            self.down(quiet=True)
            raise
        (self.state_dir / "cluster.json").write_text(json.dumps(self.info(), indent=1))
        self.log(f"cluster up in {time.monotonic() - started:.1f} s: export KUBECONFIG={self.kubeconfig}")

    def _kubeconfig(self, client: str) -> Path:
        return write_kubeconfig(self.state_dir / f"{client}.kubeconfig", self.cp.pki, client, self.cp.url)

    def _start_controllers(self, bin_dir: Path) -> None:
        p = self.cp.pki
        self.daemons.start("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"),
            "--kubeconfig", str(self._kubeconfig("controller-manager")),
            "--bind-address", "127.0.0.1", "--secure-port", "0", "--port", "0",
            "--service-account-private-key-file", str(p.key("sa")), "--root-ca-file", str(p.ca),
            "--use-service-account-credentials=true",
            "--cluster-signing-cert-file", str(p.ca), "--cluster-signing-key-file", str(p.dir / "ca.key"),
            "--service-cluster-ip-range", SERVICE_CIDR, "--leader-elect=false", "--v", "1",
        ])
        self.daemons.start("kube-scheduler", [
            str(bin_dir / "kube-scheduler"), "--kubeconfig", str(self._kubeconfig("scheduler")),
            "--bind-address", "127.0.0.1", "--secure-port", "0", "--port", "0", "--leader-elect=false",
            "--v", "1",
        ])

    def _start_containerd(self) -> None:
        root = self.state_dir / "containerd"
        (root / "root").mkdir(parents=True, exist_ok=True)
        (self.state_dir / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        (root / "config.toml").write_text(f"""version = 2
root = "{root / 'root'}"
state = "{root / 'state'}"
[grpc]
  address = "{self.sock}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root / 'opt'}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # No CAP_SYS_RESOURCE here: without this runc fails with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{self.state_dir / 'cni' / 'net.d'}"
""")
        self.daemons.start("containerd", ["containerd", "--config", str(root / "config.toml")])
        wait_for(lambda: subprocess.run([*self.ctr(), "version"], capture_output=True).returncode == 0,
                 30, "containerd", lambda: self.daemons.log_tail("containerd"))
        (self.state_dir / "cni" / "net.d" / "10-don-pods.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "don-pods",
            "plugins": [{
                "type": "bridge", "bridge": network.POD_BRIDGE, "isGateway": True, "ipMasq": False,
                "hairpinMode": True,  # a pod must reach itself through its own Service
                "ipam": {"type": "host-local", "ranges": [[{"subnet": network.POD_CIDR}]],
                         "dataDir": str(self.state_dir / "cni" / "ipam"),
                         # No default route: pods reach only Services, the node and each other.
                         "routes": [{"dst": SERVICE_CIDR}, {"dst": f"{network.NODE_IP}/32"}]},
            }],
        }, indent=1))

    def _import_pause(self) -> None:
        source = binaries.kubernetes_dir() / "pause.c"
        with tempfile.TemporaryDirectory(prefix="pause-", dir=self.state_dir) as tmp:
            root = Path(tmp) / "root"
            root.mkdir()
            subprocess.run(["gcc", "-Os", "-static", "-o", str(root / "pause"), str(source)], check=True,
                           capture_output=True)
            layer = images.layer_from_dir(root, "pause-3.4")
        config = {"architecture": "amd64", "os": "linux",
                  "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
                  "rootfs": {"type": "layers", "diff_ids": [f"sha256:{images.layer_digest(layer)}"]}}
        images.import_images(self.ctr(), specs=(), log=self.log, extra=[(PAUSE_IMAGE, [layer], config)])

    def _start_kubelet(self, bin_dir: Path) -> None:
        p = self.cp.pki
        kubelet_dir = self.state_dir / "kubelet"
        kubelet_dir.mkdir()
        self.kubelet_port = free_port()
        config = kubelet_dir / "config.yaml"
        config.write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": "127.0.0.1", "port": self.kubelet_port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            "tlsCertFile": str(p.cert("kubelet-serving")), "tlsPrivateKeyFile": str(p.key("kubelet-serving")),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(p.ca)}},
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs", "failSwapOn": False,
            # cgroup v1 host without a systemd hierarchy for us: no per-QoS cgroups, no allocatable enforcement.
            "cgroupsPerQOS": False, "enforceNodeAllocatable": [],
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False, "maxPods": 50, "resolvConf": "/etc/resolv.conf",
            "volumeStatsAggPeriod": "0s", "nodeStatusReportFrequency": "10s",
        }))
        self.daemons.start("kubelet", [
            str(bin_dir / "kubelet"), "--config", str(config), "--kubeconfig", str(self._kubeconfig("kubelet")),
            "--root-dir", str(kubelet_dir / "root"), "--cert-dir", str(kubelet_dir / "pki"),
            "--container-runtime", "remote", "--container-runtime-endpoint", f"unix://{self.sock}",
            "--image-service-endpoint", f"unix://{self.sock}", "--runtime-request-timeout", "10m",
            "--hostname-override", "localhost", "--node-ip", network.NODE_IP,
            "--pod-infra-container-image", PAUSE_IMAGE, "--v", "1",
        ])

    def _start_kube_proxy(self, bin_dir: Path) -> None:
        config = self.state_dir / "kube-proxy.yaml"
        config.write_text(json.dumps({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self._kubeconfig("kube-proxy"))},
            "mode": "iptables", "clusterCIDR": network.POD_CIDR, "hostnameOverride": "localhost",
            "bindAddress": "127.0.0.1", "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "nodePortAddresses": [f"{network.NODE_IP}/32"],
            # Leave the host's conntrack sysctls alone (not writable in this VM).
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }))
        self.daemons.start("kube-proxy", [str(bin_dir / "kube-proxy"), "--config", str(config), "--v", "1"])

    def _wait_usable(self) -> None:
        def node_ready() -> bool:
            status, node = self.cp.request("GET", "/api/v1/nodes/localhost")
            if status != 200:
                return False
            conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            return conds.get("Ready") == "True"

        def detail() -> str:
            return "\n".join(f"--- {n} ---\n{self.daemons.log_tail(n, 1500)}"
                             for n in ("kubelet", "containerd", "kube-controller-manager"))
        wait_for(node_ready, 120, "node `localhost` Ready", detail, interval=1)
        wait_for(lambda: self.cp.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
                 60, "the default ServiceAccount", detail)

    # -- images ----------------------------------------------------------------------------------
    def import_project_images(self) -> list[str]:
        return images.import_images(self.ctr(), log=self.log)

    # -- down ------------------------------------------------------------------------------------
    def down(self, quiet: bool = False) -> list[str]:
        if not self.state_dir.exists():
            return []
        daemons = Daemons(self.state_dir)
        self.cp.daemons = daemons
        info = self.state_dir / "cluster.json"
        if not self.cp.url and info.exists():
            self.cp.url = json.loads(info.read_text())["url"]
        done: list[str] = []
        if self.cp.url and daemons.alive("kube-apiserver") and daemons.alive("kubelet"):
            for name in ("kube-scheduler", "kube-controller-manager"):
                daemons.stop(name)
            done += self._drain_pods()
        for name in ("kube-proxy", "kubelet"):
            daemons.stop(name)
        if daemons.alive("containerd"):
            done += self._remove_containers()
        daemons.stop_all(STOP_ORDER)
        done += self._kill_shims()
        done += self._unmount_all()
        bin_dir = binaries.kubernetes_dir() / "bin"
        if (bin_dir / "kube-proxy").exists() and (self.state_dir / "network.json").exists():
            subprocess.run([str(bin_dir / "kube-proxy"), "--cleanup"], capture_output=True)
        done += network.teardown(self.state_dir)
        if not quiet:
            self.log("removed: " + (", ".join(done) or "nothing left over"))
        return done

    def _drain_pods(self) -> list[str]:
        """Delete every pod with a short grace period so the kubelet tears sandboxes down properly."""
        status, pods = self.cp.request("GET", "/api/v1/pods")
        items = pods.get("items", []) if status == 200 else []
        for pod in items:
            md = pod["metadata"]
            self.cp.request("DELETE", f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}?gracePeriodSeconds=1")
        try:
            wait_for(lambda: not self.cp.request("GET", "/api/v1/pods")[1].get("items"), 40, "pods to terminate")
        except TimeoutError as exc:
            self.log(f"{exc}; removing containers directly")
        return [f"{len(items)} pods"] if items else []

    def _remove_containers(self) -> list[str]:
        ctr = self.ctr()
        out = subprocess.run([*ctr, "containers", "ls", "-q"], capture_output=True, text=True).stdout.split()
        netns = []
        for cid in out:
            info = subprocess.run([*ctr, "containers", "info", cid], capture_output=True, text=True).stdout
            try:
                spec = json.loads(info).get("Spec", {})
                for ns in spec.get("linux", {}).get("namespaces", []):
                    if ns.get("type") == "network" and ns.get("path", "").startswith("/var/run/netns/"):
                        netns.append(ns["path"])
            except ValueError:
                pass
            subprocess.run([*ctr, "tasks", "kill", "-s", "SIGKILL", cid], capture_output=True)
        for cid in out:
            subprocess.run([*ctr, "tasks", "delete", "-f", cid], capture_output=True)
            subprocess.run([*ctr, "containers", "delete", cid], capture_output=True)
        for path in set(netns):
            subprocess.run(["umount", path], capture_output=True)
            Path(path).unlink(missing_ok=True)
        return [f"{len(out)} containers"] if out else []

    def _kill_shims(self) -> list[str]:
        """containerd shims daemonize out of containerd's process group; find ours by our socket path."""
        killed = []
        marker = str(self.sock).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline:
                try:
                    os.kill(int(proc.name), 9)
                    killed.append(proc.name)
                except ProcessLookupError:
                    pass
        return [f"{len(killed)} shims"] if killed else []

    def _unmount_all(self) -> list[str]:
        prefix = str(self.state_dir.resolve()) + "/"
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point.startswith("/run/containerd/io.containerd.runtime.v2.task/k8s.io/"):
                mounts.append(point)
        for point in sorted(set(mounts), key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)
        return [f"{len(set(mounts))} mounts"] if mounts else []

    # -- status ----------------------------------------------------------------------------------
    def info(self) -> dict:
        return {"kubeconfig": str(self.kubeconfig), "url": self.cp.url, "state_dir": str(self.state_dir),
                "node_ip": network.NODE_IP, "pod_cidr": network.POD_CIDR, "service_cidr": SERVICE_CIDR,
                "containerd": str(self.sock), "volumes": str(self.volumes),
                "kubernetes": binaries.KUBERNETES_DEBIAN_VERSION}

    @classmethod
    def attach(cls, state_dir: Path) -> "LocalCluster":
        """A handle on a cluster started earlier (by another process)."""
        cluster = cls(state_dir)
        info = json.loads((state_dir / "cluster.json").read_text())
        cluster.cp.url = info["url"]
        cluster.cp.daemons = Daemons(state_dir)
        return cluster


def cli(action: str, state_dir: Path) -> int:
    if action == "up":
        LocalCluster(state_dir).up()
        print(f"export KUBECONFIG={state_dir / 'admin.kubeconfig'}")
        return 0
    if action == "down":
        LocalCluster(state_dir).down()
        return 0
    if action == "images":
        print("\n".join(LocalCluster.attach(state_dir).import_project_images()))
        return 0
    daemons = Daemons(state_dir) if state_dir.exists() else None
    running = {n: daemons.alive(n) for n in daemons.names()} if daemons else {}
    info_path = state_dir / "cluster.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    print(json.dumps({"running": running, **info}, indent=1))
    return 0 if running and all(running.values()) else 3


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1], Path(sys.argv[2])))
