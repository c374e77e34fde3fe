"""Small helpers the e2e tests share: kubectl / helm against one cluster, pods and their logs."""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from scripts.k8s_tools import helm_path, kubectl_path


class KubeError(AssertionError):
    pass


@dataclass
class Kube:
    kubeconfig: Path
    namespace: str
    env: dict = field(default_factory=dict)

    def _run(self, argv: list[str], input: str | None, check: bool, timeout: float) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                              env={**self.env, "KUBECONFIG": str(self.kubeconfig)})
        if check and proc.returncode != 0:
            raise KubeError(f"{' '.join(argv[:6])} ... failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                            f"{proc.stderr[-3000:]}")
        return proc

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120,
                namespaced: bool = True) -> subprocess.CompletedProcess:
        ns = ["-n", self.namespace] if namespaced else []
        return self._run([kubectl_path(), *ns, *args], input, check, timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return self._run([helm_path(), "--namespace", self.namespace, *args], None, check, timeout)

    def apply(self, *objects: dict) -> None:
        # JSON, not YAML: a YAML dump writes strings such as N or no unquoted (read back as booleans).
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))

    def get(self, kind: str, name: str = "", selector: str = "") -> dict:
        args = ["get", kind, *([name] if name else []), *(["-l", selector] if selector else []), "-o", "json"]
        return json.loads(self.kubectl(*args).stdout)

    def wait_job(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.get("job", name).get("status", {})
            if status.get("succeeded"):
                return
            if status.get("failed"):
                raise KubeError(f"job {name} failed:\n{self.job_logs(name)}")
            time.sleep(2)
        raise KubeError(f"job {name} did not finish in {timeout:.0f} s:\n{self.describe('job', name)}\n"
                        f"{self.job_logs(name)}")

    def job_logs(self, name: str) -> str:
        return self.kubectl("logs", f"job/{name}", "--tail", "60", check=False).stdout[-4000:]

    def describe(self, kind: str, name: str = "", selector: str = "") -> str:
        args = ["describe", kind, *([name] if name else []), *(["-l", selector] if selector else [])]
        return self.kubectl(*args, check=False).stdout[-4000:]

    def run_pod(self, pod: dict, timeout: float = 180) -> tuple[str, str]:
        """Create a one-shot pod, wait for it to finish, return (phase, logs), and delete it."""
        name = pod["metadata"]["name"]
        self.kubectl("delete", "pod", name, "--ignore-not-found", "--wait=true")
        self.apply(pod)
        deadline = time.monotonic() + timeout
        phase = ""
        while time.monotonic() < deadline:
            phase = self.get("pod", name).get("status", {}).get("phase", "")
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(1)
        logs = self.kubectl("logs", name, check=False).stdout
        if phase not in ("Succeeded", "Failed"):
            logs += "\n" + self.describe("pod", name)
        self.kubectl("delete", "pod", name, "--ignore-not-found", "--wait=false", check=False)
        return phase, logs
