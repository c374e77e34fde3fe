"""`make help` is how a newcomer finds the targets: it must list every one of them."""
import re
import shutil
import subprocess

from tests.conftest import REPO, unavailable


def test_make_help_lists_every_target():
    if not shutil.which("make"):
        unavailable("make is not installed")
    makefile = (REPO / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split())
    rules = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.M))
    assert phony == rules, f"targets missing from .PHONY or without a rule: {phony ^ rules}"
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    listed = {line.split()[1]: line for line in out.splitlines() if line.strip().startswith("make ")}
    assert set(listed) == rules, f"make help does not list: {rules - set(listed)}"
    for target, line in listed.items():
        assert len(line.split(None, 2)) == 3, f"make help has no description for {target}"
