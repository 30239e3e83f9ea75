"""Map the repo's folders onto one import root, ``contrast``.

``shared/`` becomes ``contrast`` and ``services/<name>/`` becomes ``contrast.<name>``, so an installed copy
puts nothing but ``contrast`` into site-packages. Packages are discovered here rather than listed in
pyproject.toml so that adding a subpackage needs no packaging edit.
"""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent


def _discover() -> tuple[list[str], dict[str, str]]:
    package_dir = {"contrast": "shared"}
    packages: list[str] = []
    for base, prefix in [(ROOT / "shared", "contrast")] + [
        (d, f"contrast.{d.name}")
        for d in sorted((ROOT / "services").iterdir())
        if (d / "__init__.py").exists()
    ]:
        package_dir[prefix] = str(base.relative_to(ROOT))
        for init in sorted(base.rglob("__init__.py")):
            rel = init.parent.relative_to(base)
            packages.append(".".join((prefix, *rel.parts)) if rel.parts else prefix)
    return packages, package_dir


_packages, _package_dir = _discover()
setup(packages=_packages, package_dir=_package_dir, package_data={"contrast": ["py.typed", "**/*.pem"]})
