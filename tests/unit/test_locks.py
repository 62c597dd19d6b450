"""The dependency locks: each .in file agrees with its lock, the venv equals the lock, every import is declared."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import PROJECT_ROOT

# Each lock and the .in files `make lock` compiles into it.
LOCKS = {
    "requirements.txt": ["requirements.in"],
    "requirements-team.txt": ["requirements.in", "requirements-team.in"],
    "requirements-dev.txt": ["requirements.in", "requirements-team.in", "requirements-dev.in"],
}
# The one package a venv holds beside its lock: the pip that `python -m venv` seeds, which bootstraps uv.
VENV_SEED = {"pip"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def direct_requirements(in_file: Path) -> list[Requirement]:
    """The requirements an .in file lists, comments and blank lines left out."""
    lines = (line.split("#", 1)[0].strip() for line in in_file.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def pins(lock_file: Path) -> dict[str, list[tuple[str, str]]]:
    """`name -> [(version, marker)]` of a lock; a package may be pinned twice under exclusive markers."""
    pinned: dict[str, list[tuple[str, str]]] = {}
    for line in lock_file.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pinned.setdefault(canonicalize_name(match[1]), []).append((match[2], (match[3] or "").strip()))
    return pinned


def locked_here(lock_file: Path) -> dict[str, str]:
    """`name -> version` of what the lock installs on this machine (markers evaluated)."""
    return {
        name: version
        for name, entries in pins(lock_file).items()
        for version, marker in entries
        if not marker or Marker(marker).evaluate()
    }


def annotated_direct(lock_file: Path) -> dict[str, set[str]]:
    """`.in file -> names` that the lock says it pinned because that .in file asked (`# via -r <file>`)."""
    direct: dict[str, set[str]] = {}
    current = ""
    for line in lock_file.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match[1])
        for in_file in re.findall(r"-r (\S+\.in)", line):
            direct.setdefault(in_file, set()).add(current)
    return direct


def lock_problems(root: Path) -> list[str]:
    """Everything on which the .in files and the locks under `root` disagree, one line each."""
    problems = []
    for lock_name, in_names in LOCKS.items():
        lock_file = root / lock_name
        text = lock_file.read_text()
        if "#    make lock\n" not in text:
            problems.append(f"{lock_name}: not written by `make lock`")
        pinned = pins(lock_file)
        for package in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2]):
            if "==" in package.splitlines()[0] and "--hash=sha256:" not in package:
                problems.append(f"{lock_name}: {package.split('==')[0]} has no hash")
        annotated = annotated_direct(lock_file)
        for in_name in in_names:
            asked = direct_requirements(root / in_name)
            for requirement in asked:
                name = canonicalize_name(requirement.name)
                if name not in pinned:
                    problems.append(f"{lock_name}: {requirement} of {in_name} is not locked; run `make lock`")
                elif not any(requirement.specifier.contains(Version(version)) for version, _ in pinned[name]):
                    problems.append(f"{lock_name}: {requirement} of {in_name} does not allow the locked version")
            stale = annotated.get(in_name, set()) - {canonicalize_name(requirement.name) for requirement in asked}
            problems += [f"{lock_name}: {name} is locked for {in_name}, which no longer asks for it" for name in stale]
    smaller = locked_here(root / "requirements.txt")
    for lock_name in ("requirements-team.txt", "requirements-dev.txt"):
        bigger = locked_here(root / lock_name)
        problems += [
            f"{lock_name} pins {name}=={bigger[name]}, requirements.txt {version}"
            for name, version in smaller.items()
            if bigger.get(name, version) != version
        ]
    return problems


@pytest.fixture
def lock_copy(tmp_path: Path) -> Path:
    for name in (*LOCKS, *LOCKS["requirements-dev.txt"]):
        shutil.copyfile(PROJECT_ROOT / name, tmp_path / name)
    return tmp_path


def test_every_in_file_agrees_with_its_lock():
    assert lock_problems(PROJECT_ROOT) == []


def test_a_package_added_to_an_in_file_but_not_locked_is_caught(lock_copy: Path):
    with (lock_copy / "requirements-team.in").open("a") as in_file:
        in_file.write("rich-click>=1\n")
    assert lock_problems(lock_copy) == [
        "requirements-team.txt: rich-click>=1 of requirements-team.in is not locked; run `make lock`",
        "requirements-dev.txt: rich-click>=1 of requirements-team.in is not locked; run `make lock`",
    ]


def test_a_package_dropped_from_an_in_file_but_still_locked_is_caught(lock_copy: Path):
    in_file = lock_copy / "requirements.in"
    in_file.write_text(re.sub(r"(?m)^skops.*\n", "", in_file.read_text()))
    assert "requirements.txt: skops is locked for requirements.in, which no longer asks for it" in lock_problems(
        lock_copy
    )


def test_a_range_that_excludes_the_locked_version_and_a_hand_edited_pin_are_caught(lock_copy: Path):
    in_file = lock_copy / "requirements.in"
    in_file.write_text(re.sub(r"(?m)^pandas.*$", "pandas>=99", in_file.read_text()))
    with (lock_copy / "requirements-dev.txt").open("a") as lock:
        lock.write("tabulate==0.9.0\n")
    problems = lock_problems(lock_copy)
    assert "requirements.txt: pandas>=99 of requirements.in does not allow the locked version" in problems
    assert "requirements-dev.txt: tabulate has no hash" in problems


def test_the_venv_holds_exactly_the_lock():
    """`make test` syncs the venv to requirements-dev.txt: nothing missing, nothing extra, same versions."""
    installed = {
        canonicalize_name(distribution.metadata["Name"]): distribution.version
        for distribution in importlib.metadata.distributions(path=sys.path)
    }
    locked = locked_here(PROJECT_ROOT / "requirements-dev.txt")
    assert sorted(set(locked) - set(installed)) == []
    assert sorted(set(installed) - set(locked) - VENV_SEED) == []
    assert {name: version for name, version in installed.items() if locked.get(name, version) != version} == {}


def test_pip_check_is_clean():
    checked = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


def deptry(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "deptry"), "--no-ansi", "."],
        cwd=root,
        capture_output=True,
        text=True,
    )


def test_every_import_of_src_is_declared_and_every_declared_package_imported():
    checked = deptry(PROJECT_ROOT)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_undeclared_import_and_an_unused_requirement_fail_the_dependency_check(tmp_path: Path):
    shutil.copytree(PROJECT_ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", *LOCKS["requirements-dev.txt"]):
        shutil.copyfile(PROJECT_ROOT / name, tmp_path / name)
    (tmp_path / "src" / "shortcut.py").write_text('"""Uses a package only MLflow brings."""\n\nimport sqlalchemy\n')
    with (tmp_path / "requirements.in").open("a") as in_file:
        in_file.write("tabulate>=0.9\n")
    checked = deptry(tmp_path)
    output = checked.stdout + checked.stderr
    assert checked.returncode != 0
    assert "src/shortcut.py:3:8: DEP003 'sqlalchemy' imported but it is a transitive dependency" in output
    assert "DEP002 'tabulate' defined as a dependency but not used in the codebase" in output
