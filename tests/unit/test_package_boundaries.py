"""The node package stands apart from its lab: importing the node never loads `caslab`."""

from __future__ import annotations

import json
import subprocess
import sys

PRODUCT_MODULES = [
    "cas", "cas.app", "cas.cli", "cas.service", "cas.client.lookup", "cas.doctor.run",
    "sitemap.cli", "sitemap.load",
]  # fmt: skip


def test_the_node_never_imports_the_lab() -> None:
    program = (
        "import importlib, json, sys\n"
        f"for name in {PRODUCT_MODULES!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('caslab', 'radicale'))))"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_sitemap_never_imports_cas() -> None:
    program = (
        "import json, sys, sitemap.cli, sitemap.load, sitemap.discovery\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'cas')))"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_cas_lab_without_the_lab_says_how_to_install_it() -> None:
    program = (
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'caslab': raise ImportError('No module named caslab')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "from cas.cli import main\n"
        "sys.exit(main(['lab']))"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 2
    assert "the lab is not installed" in done.stderr and "pip install '.[lab]'" in done.stderr
