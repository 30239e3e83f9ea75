"""`pip install .` into a fresh venv exposes one import root, `contrast`, and no generic top-level names."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "build", ".run", "*.egg-info", "__pycache__", ".*_cache", "tests"
)


def test_pip_install_gives_a_single_contrast_root(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)  # build from a copy: never write build output into the tree
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    # The build backend comes from build isolation (pyproject's build-system). Runtime dependencies come from
    # the dev venv through a plain path entry, which does not activate that venv's editable-install hook:
    # `contrast` can only come from what this test installs.
    dev_site = sysconfig.get_path("purelib")
    (site / "zz_dev_deps.pth").write_text(dev_site + "\n")
    before = {p.name for p in site.iterdir()}
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(src)],
        check=True,
        timeout=300,
    )
    added = {p.name for p in site.iterdir()} - before
    tops = {name for name in added if not name.endswith((".dist-info", ".pth")) and name != "__pycache__"}
    assert tops == {"contrast"}, added
    assert not {"shared", "services", "tests"} & added
    check = (
        "import contrast, contrast.verifier, contrast.runtime, contrast.wire.v1, contrast.subjects; "
        "import pathlib, sys; p = pathlib.Path(contrast.__file__).resolve(); "
        f"sys.exit(0 if str(p).startswith({str(site.resolve())!r}) else 'imported from ' + str(p))"
    )
    subprocess.run([str(python), "-c", check], check=True, cwd=tmp_path, timeout=120)
    scripts = (env_dir / "bin" / "contrast").read_text()
    assert "contrast.cli.main" in scripts
    assert sys.version_info >= (3, 11)
