"""The release: the wheel builds, carries its data, installs into a fresh venv and runs outside the checkout.

Slow (a build and a venv: about a minute), so marked `slow`; CI's `wheel` job does the same steps
(.github/workflows/ci.yml). The cheap checks (version, changelog, package data declared) run always.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_version_has_a_changelog_entry():
    version = project()["version"]
    assert f"## {version} " in (ROOT / "CHANGELOG.md").read_text()


def test_extras_carry_what_the_features_import():
    extras = project()["optional-dependencies"]
    assert any(d.startswith("matplotlib") for d in extras["plot"])
    assert {d.split(">")[0].split("=")[0] for d in extras["test"]} >= {"pytest", "hypothesis", "jsonschema", "matplotlib"}


def test_runtime_data_is_found_next_to_the_modules():
    """No repo-relative paths: the built-in scenarios and the routines' sources are package data."""
    from importlib.resources import files

    assert sorted(p.name for p in (files("faultlab") / "builtin").iterdir() if p.name.endswith(".toml"))
    assert (files("guest_asm") / "uaccess.S").is_file() and (files("guest_asm") / "include" / "copy_template.S").is_file()


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_wheel_installs_and_runs_the_matrix_outside_the_checkout(tmp_path):
    pytest.importorskip("build", reason="python -m build: pip install build")
    # Build from a copy (setuptools writes egg-info and build/ into the tree it builds), with no
    # flags: the sdist first, then the wheel from the sdist, so a file missing from the sdist shows.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "__pycache__", "build", "dist", "*.egg-info", ".hypothesis", ".pytest_cache", "*.faultlab-cache"))
    dist = tmp_path / "dist"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FAULTLAB_VMLINUX")}
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(src)], cwd=tmp_path, env=clean)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    try:
        _run([sys.executable, "-m", "twine", "check", str(wheel), str(sdist)], cwd=tmp_path)
    except AssertionError:
        if subprocess.run([sys.executable, "-c", "import twine"]).returncode == 0:
            raise
    names = zipfile.ZipFile(wheel).namelist()
    assert "faultlab/builtin/a_zeropad_overread.toml" in names and "guest_asm/include/copy_template.S" in names
    # the sdist is a clone's worth: the tests, the docs they read (schemas, api.md, pictures), the scenarios
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    tracked = {"tests/test_json_schema.py", "docs/schema/run.schema.json", "docs/api.md", "docs/img/sweep_copy_from_user.png",
               "scenarios/inline_zeropad.toml", "CHANGELOG.md", "tests/data/asm/copy_user.S", ".ci/run", "scripts/update_docs.py"}
    assert tracked <= members, sorted(tracked - members)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    py = env_dir / "bin" / "python"
    # the dependencies from this interpreter's wheels cache where possible; the package from the wheel
    _run([str(py), "-m", "pip", "install", "-q", str(wheel)], cwd=tmp_path, env=clean)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean
    out = _run([str(env_dir / "bin" / "faultlab"), "matrix"], cwd=elsewhere, env=env)
    assert "42 runs, 42 as expected, 0 unexpected, 0 unjudged" in out
    where = _run([str(py), "-c", "import faultlab, guest_asm; print(faultlab.__file__, guest_asm.__file__)"], cwd=elsewhere, env=env)
    assert str(ROOT) not in where and str(env_dir) in where
    out = _run([str(env_dir / "bin" / "faultlab"), "sweep", "full_name_hash", "--limit", "20"], cwd=elsewhere, env=env)
    assert "20 cases, 0 failures" in out


# The import name of each distribution the package may use (PyPI name -> module).
_MODULE_OF = {"unicorn": "unicorn", "capstone": "capstone", "keystone-engine": "keystone", "pyelftools": "elftools",
              "rich": "rich", "numpy": "numpy", "matplotlib": "matplotlib"}


def _declared(requirements: list[str]) -> set[str]:
    import re

    names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}
    return {_MODULE_OF[n] for n in names if n in _MODULE_OF}


def test_every_third_party_import_of_the_package_is_declared():
    """A module the installed package imports at load time must be a dependency, one imported inside a
    function (an optional feature) at least an extra: a wheel installed without the test extra must run."""
    import ast

    ours = {"abi", "emu", "kimage", "kasm", "hyp", "host", "faultlab", "guest_asm"}
    required = _declared(project()["dependencies"])
    optional = set().union(*(_declared(v) for v in project()["optional-dependencies"].values()))
    missing = []
    for pkg in sorted(ours):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            top_level = {id(n) for n in tree.body}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods = [node.module]
                else:
                    continue
                for mod in (m.split(".")[0] for m in mods):
                    if mod in ours or mod in sys.stdlib_module_names or mod == "__future__":
                        continue
                    allowed = required if id(node) in top_level else required | optional
                    if path.name == "pytest_plugin.py":  # loaded by pytest only, which brings its own
                        allowed = allowed | {"pytest", "_pytest"}
                    if mod not in allowed:
                        missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {mod}")
    assert not missing, "imports no dependency declares: " + ", ".join(missing)
