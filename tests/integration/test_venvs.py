"""Virtualenvs for Python jobs, built with the real venv module and real pip, offline:
the wheels come from tests/testdata/wheels, packed into .whl files by the tests."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from reconciler.errors import TargetError
from reconciler.targets.local.venvs import (
    MARKER_NAME,
    ensure_venv,
    venv_python,
    wheel_entry_argv,
)

WHEEL_SOURCES = Path(__file__).parent.parent / "testdata" / "wheels"


def build_wheel(source: Path, out_dir: Path) -> Path:
    """Pack a pure-Python package (pyproject.toml + its package directory) into a
    wheel: a zip holding the modules and a dist-info with METADATA, WHEEL and RECORD.
    (reconciler's venv has no `wheel` package, so setuptools cannot build one offline.)"""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    dist_info = f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {
        path.relative_to(source).as_posix(): path.read_bytes()
        for path in sorted((source / name).rglob("*.py"))
    }
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    )
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: reconciler-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    scripts = project.get("scripts", {})
    if scripts:
        lines = "".join(f"{script} = {target}\n" for script, target in scripts.items())
        files[f"{dist_info}/entry_points.txt"] = f"[console_scripts]\n{lines}".encode()
    record = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(content)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, content in files.items():
            archive.writestr(path, content)
    return wheel


@pytest.fixture(scope="module")
def tinypkg_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(WHEEL_SOURCES / "tinypkg", tmp_path_factory.mktemp("wheels"))


@pytest.fixture(scope="module")
def venv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("venvs")


@pytest.fixture(scope="module")
def tinypkg_python(venv_root: Path, tinypkg_wheel: Path) -> Path:
    return ensure_venv(venv_root, [], [tinypkg_wheel], index_url=None, find_links=[])


def test_a_wheel_is_installed_and_its_entry_point_runs_with_the_arguments(
    tinypkg_python: Path, tmp_path: Path
) -> None:
    argv = wheel_entry_argv(tinypkg_python, "tinypkg:main", ["--day", "today", "it's; $x"])
    (tmp_path / "tinypkg.py").write_text("raise SystemExit('the working directory shadowed')")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    printed = json.loads(done.stdout)
    assert printed["argv"] == ["tinypkg:main", "--day", "today", "it's; $x"]
    assert Path(printed["prefix"]) == tinypkg_python.parent.parent


def test_the_built_venv_is_complete_relocated_and_has_no_pip(tinypkg_python: Path) -> None:
    venv = tinypkg_python.parent.parent
    marker = json.loads((venv / MARKER_NAME).read_text())
    assert [wheel["name"] for wheel in marker["wheels"]] == ["tinypkg-0.1-py3-none-any.whl"]
    assert not list(venv.parent.glob("*.build"))
    script = (venv / "bin" / "tinypkg").read_text()
    assert script.startswith(f"#!{venv}/bin/python")  # rewritten from the build dir
    no_pip = subprocess.run([tinypkg_python, "-c", "import pip"], capture_output=True)
    assert no_pip.returncode != 0
    console_script = subprocess.run([venv / "bin" / "tinypkg"], capture_output=True)
    assert console_script.returncode == 3


def test_the_same_inputs_reuse_the_venv(
    venv_root: Path, tinypkg_wheel: Path, tinypkg_python: Path
) -> None:
    marker = tinypkg_python.parent.parent / MARKER_NAME
    built_at = marker.stat().st_mtime_ns
    started = time.monotonic()
    again = ensure_venv(venv_root, [], [tinypkg_wheel], index_url=None, find_links=[])
    assert again == tinypkg_python
    assert marker.stat().st_mtime_ns == built_at
    assert time.monotonic() - started < 1.0


def test_a_requirement_is_installed_from_the_pip_settings(
    tmp_path: Path, tinypkg_wheel: Path
) -> None:
    empty_index = tmp_path / "index"
    empty_index.mkdir()
    python = ensure_venv(
        tmp_path / "venvs",
        ["tinypkg==0.1"],
        [],
        index_url=empty_index.as_uri(),
        find_links=[str(tinypkg_wheel.parent)],
    )
    done = subprocess.run(wheel_entry_argv(python, "tinypkg:main", []), capture_output=True)
    assert done.returncode == 3


def test_without_requirements_a_venv_without_pip_is_made_quickly(tmp_path: Path) -> None:
    started = time.monotonic()
    python = ensure_venv(tmp_path / "venvs", [], [], index_url=None, find_links=[])
    assert time.monotonic() - started < 10
    assert python == venv_python(python.parent.parent)
    assert not (python.parent / "pip").exists()
    done = subprocess.run(
        [python, "-c", "import sys; print(sys.prefix != sys.base_prefix)"],
        capture_output=True,
        text=True,
    )
    assert done.stdout.strip() == "True"


def test_different_inputs_make_different_venvs(tmp_path: Path) -> None:
    root = tmp_path / "venvs"
    first = ensure_venv(root, [], [], index_url=None, find_links=[])
    second = ensure_venv(root, [], [], index_url="https://pypi.example/simple", find_links=[])
    assert first != second


def test_a_failed_install_raises_with_pips_message_and_leaves_no_venv(tmp_path: Path) -> None:
    broken = tmp_path / "wheels" / "broken-1.0-py3-none-any.whl"
    broken.parent.mkdir()
    broken.write_bytes(b"this is not a zip file")
    root = tmp_path / "venvs"
    with pytest.raises(TargetError, match=r"pip failed with exit code \d+:\n(.|\n)*ERROR"):
        ensure_venv(root, [], [broken], index_url=None, find_links=[])
    assert sorted(path.name for path in root.iterdir() if not path.name.endswith(".lock")) == []


def test_a_requirement_that_looks_like_an_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="not a requirement specifier"):
        ensure_venv(
            tmp_path, ["--index-url=https://evil.example"], [], index_url=None, find_links=[]
        )
    assert list(tmp_path.iterdir()) == []


def test_a_missing_wheel_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="cannot read wheel"):
        ensure_venv(tmp_path, [], [tmp_path / "nope.whl"], index_url=None, find_links=[])


def test_wheel_entry_argv_passes_user_values_only_as_argv(tmp_path: Path) -> None:
    argv = wheel_entry_argv(tmp_path / "python", "pkg.main:run", ["'; import os"])
    assert argv[:2] == [str(tmp_path / "python"), "-P"]
    assert argv[4:] == ["pkg.main:run", "'; import os"]
    assert "pkg" not in argv[3]


@pytest.mark.parametrize("entry_point", ["pkg.main", "pkg:", ":run", "pkg:run()", "a b:c"])
def test_wheel_entry_argv_refuses_what_is_not_an_entry_point(entry_point: str) -> None:
    with pytest.raises(TargetError, match="module:function"):
        wheel_entry_argv(Path("python"), entry_point, [])


def test_concurrent_builders_of_one_venv_build_it_once(tmp_path: Path) -> None:
    root = tmp_path / "venvs"
    code = (
        "import sys; from pathlib import Path\n"
        "from reconciler.targets.local.venvs import MARKER_NAME, ensure_venv\n"
        "python = ensure_venv(Path(sys.argv[1]), [], [], index_url=None, find_links=[])\n"
        "marker = python.parent.parent / MARKER_NAME\n"
        "print(python, marker.stat().st_mtime_ns)\n"
    )
    builders = [
        subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = {builder.communicate(timeout=60)[0] for builder in builders}
    assert all(builder.returncode == 0 for builder in builders)
    assert len(outputs) == 1  # one path, one marker: built once, then reused
    assert len([path for path in root.iterdir() if path.is_dir()]) == 1
