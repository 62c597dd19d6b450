"""The house's rules, checked: the layers of src/, entry points alone exit, DVC sees every module a stage runs."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

EXITS = {"fail", "exit_now", "_exit", "exit"}
# The exit layer itself: `fail` and `exit_now` are defined there, `parse_config` and `run_stage` are the
# command-line edges every main() and stage goes through.
EXIT_EDGES = {("src/cli.py", name) for name in ("exit_now", "fail", "parse_config", "run_stage", "one_line_errors")}
# A stage command handed to the preloaded runner exits with the stage's code; the runner's child is the stage command.
EXIT_EDGES |= {("src/forkclient.py", "run_in_runner_if_any"), ("src/pipeline/preload.py", "_run_child")}
EXIT_EDGES |= {("src/pipeline/preload.py", "end")}


def module_file(root: Path, name: str) -> Path | None:
    """The file of a module of src/ (a package's __init__.py), or None if it is not one."""
    path = root / Path(*name.split("."))
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def project_imports(root: Path, path: Path) -> set[str]:
    """The src modules a file imports, at the top or inside a function alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found |= {name for name in names if name.split(".")[0] == "src" and module_file(root, name)}
    return found


def code_a_stage_runs(root: Path, stage: str) -> set[str]:
    """Every file of src/ that `python -m src.stages.<stage>` imports, directly or not.

    Packages whose __init__.py holds only a docstring are left out: no code of theirs runs.
    """
    seen: set[str] = set()
    todo = [f"src.stages.{stage}"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:end]) for end in range(1, len(parts))]  # importing a module imports its packages
        todo += project_imports(root, module_file(root, name))
    files = set()
    for name in seen:
        path = module_file(root, name)
        body = ast.parse(path.read_text()).body
        only_docstring = all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)
        if not (path.name == "__init__.py" and only_docstring):
            files.add(path.relative_to(root).as_posix())
    return files


def missing_code_deps(root: Path) -> dict[str, list[str]]:
    """Per stage, the modules it runs that dvc.yaml does not list as deps (so editing them would not re-run it)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    missing = {}
    for stage in stages:
        listed = {dep for dep in stages[stage]["deps"] if dep.startswith("src/")}
        gap = sorted(code_a_stage_runs(root, stage) - listed)
        if gap:
            missing[stage] = gap
    return missing


def test_dvc_yaml_lists_every_module_each_stage_runs():
    assert missing_code_deps(PROJECT_ROOT) == {}


def test_a_module_left_out_of_a_stages_deps_is_caught(tmp_path):
    shutil.copytree(PROJECT_ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    text = (PROJECT_ROOT / "dvc.yaml").read_text()
    (tmp_path / "dvc.yaml").write_text(text.replace("      - src/ml/split.py\n", "", 1))
    assert missing_code_deps(tmp_path) == {"data_split": ["src/ml/split.py"]}


def test_every_stage_of_dvc_yaml_is_a_module_of_src_stages_and_no_module_is_left_over():
    stages = set(yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"])
    modules = {path.stem for path in (PROJECT_ROOT / "src" / "stages").glob("*.py") if path.stem != "__init__"}
    assert stages == modules


def own_calls(function: ast.FunctionDef) -> list[ast.Call]:
    """The calls in a function's body, not in the functions defined inside it (those are checked as themselves)."""
    calls, pending = [], list(function.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Call):
            calls.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return calls


def exits_outside_entry_points(root: Path) -> list[str]:
    """Calls that end the process (`fail`, `exit_now`, `sys.exit`, `os._exit`) outside a main() and the CLI edge."""
    found = []
    for path in sorted((root / "src").rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef) or function.name == "main":
                continue
            if (relative, function.name) in EXIT_EDGES:
                continue
            for call in own_calls(function):
                name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
                if name in EXITS:
                    found.append(f"{relative}:{call.lineno} {function.name}() calls {name}")
    return found


def test_only_entry_points_end_the_process():
    assert exits_outside_entry_points(PROJECT_ROOT) == []


def test_a_library_function_that_exits_is_caught(tmp_path):
    shutil.copytree(PROJECT_ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    helper = "\n\ndef load_or_quit(path):\n    fail(f'{path} is missing')\n"
    with (tmp_path / "src" / "io.py").open("a") as module:
        module.write(helper)
    assert exits_outside_entry_points(tmp_path) == [
        "src/io.py:" + str(len((tmp_path / "src/io.py").read_text().splitlines())) + " load_or_quit() calls fail"
    ]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
    )


def test_the_layers_hold():
    checked = lint_imports(PROJECT_ROOT)
    assert checked.returncode == 0, checked.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("src/ml/split.py", "from src.tracking.client import import_mlflow", "layers"),
        ("src/ml/metrics.py", "import mlflow", "the science knows no tools"),
        ("src/stages/train.py", "from src.stages.featurize import featurize", "stages share files, not code"),
        ("src/stages/evaluate.py", "from src.service.champion import promote", "layers"),
    ],
)
def test_a_wrong_import_breaks_a_contract(tmp_path, module, line, broken):
    for name in ("src", "pyproject.toml"):
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(source, tmp_path / name)
    path = tmp_path / module
    path.write_text(
        path.read_text().replace(
            "from __future__ import annotations\n", f"from __future__ import annotations\n\n{line}\n", 1
        )
    )
    checked = lint_imports(tmp_path)
    assert checked.returncode != 0
    assert f"{broken}" in checked.stdout and "BROKEN" in checked.stdout
