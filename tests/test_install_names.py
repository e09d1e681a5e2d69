"""The installed import names cannot collide with a user's own folders.

The layout's folders (``data/``, ``prior/``, ``vae_text/``, ``vae_image/``, ``apps/``) install
under the ``cola_mm`` namespace, so a user whose working directory holds its own ``data``
package (a very common name) runs the CLI, ``python -m cola_mm.cli`` and their own code side by
side.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

USER_PACKAGES = ("data", "prior", "apps", "vae_text", "vae_image")


@pytest.fixture()
def user_dir(tmp_path: Path) -> Path:
    for name in USER_PACKAGES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"OWNER = 'user'\nNAME = {name!r}\n")
    return tmp_path


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_python_m_cli_runs_beside_a_users_data_package(user_dir):
    r = run([sys.executable, "-m", "cola_mm.cli", "data", "shapes", "--help"], user_dir)
    assert r.returncode == 0, r.stderr
    assert "captioned shapes" in r.stdout.lower() or "render captioned shapes" in r.stdout.lower()


def test_the_console_script_runs_beside_a_users_data_package(user_dir, tmp_path):
    script = Path(sys.executable).with_name("cola-mm")
    if not script.exists():
        pytest.fail(f"the cola-mm console script is not installed beside {sys.executable}")
    out = tmp_path / "shapes"
    r = run([str(script), "data", "shapes", "--out", str(out), "--count", "3", "--split", "val"], user_dir)
    assert r.returncode == 0, r.stderr
    assert (out / "val").is_dir() and any((out / "val").glob("*.tar"))


def test_user_packages_and_cola_mm_import_side_by_side(user_dir):
    code = ("import data, prior, apps, vae_text, vae_image\n"
            "assert all(m.OWNER == 'user' for m in (data, prior, apps, vae_text, vae_image))\n"
            "import cola_mm.data.shapes, cola_mm.prior.flow, cola_mm.vae_text.model, cola_mm.vae_image.model\n"
            "import cola_mm.apps.preload\n"
            "assert not hasattr(cola_mm.data, 'OWNER') and data.OWNER == 'user'\n"
            "print('ok')\n")
    r = run([sys.executable, "-c", code], user_dir)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
