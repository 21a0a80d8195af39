"""The import rules of ARCHITECTURE.md, and the packaging they rely on.

import-linter cannot see this layout (its graph builder walks only the top
package's folder, while dxlab's subpackages live in sibling folders), so the
rules are checked here by reading every module's imports with ``ast``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"dxlab": "dxlab", "datasets": "dxlab.datasets", "models": "dxlab.models", "training": "dxlab.training",
           "serving": "dxlab.serving", "records": "dxlab.records"}
SUBPACKAGES = ("datasets", "models", "training", "serving", "records")
# what each subpackage may import of ours, besides itself and the core
ALLOWED = {
    "datasets": set(),
    "models": {"datasets"},
    "training": {"datasets", "models"},
    "serving": {"datasets", "models", "records"},
    "records": set(),
}
CORE_FORBIDDEN = {"cli"}  # only the CLI itself (and __main__) may import the CLI


def _module_name(folder: str, path: Path) -> str:
    rel = path.relative_to(ROOT / folder).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([FOLDERS[folder], *parts])


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names)
    return {n for n in found if n == "dxlab" or n.startswith("dxlab.")}


def _area(name: str) -> str:
    """'dxlab.datasets.images' -> 'datasets'; 'dxlab.settings' -> 'core'; 'dxlab.cli.x' -> 'cli'."""
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in SUBPACKAGES:
        return parts[1]
    if len(parts) > 1 and parts[1] in ("cli", "__main__"):
        return "cli"
    return "core"


def _violations() -> list[str]:
    bad = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            module = _module_name(folder, path)
            source = _area(module)
            if source == "cli":
                continue
            for target in _imports(path, module):
                dest = _area(target)
                if dest in (source, "core"):
                    continue
                if source == "core" or dest == "cli" or dest not in ALLOWED[source]:
                    bad.append(f"{module} imports {target} ({source} -> {dest})")
    return bad


def test_import_rules_hold():
    assert _violations() == []


def test_the_checker_catches_a_violation(tmp_path, monkeypatch):
    bad = ROOT / "records" / "_tmp_violation.py"
    bad.write_text("from dxlab.serving import app\nfrom ..training import loop\n")
    try:
        found = _violations()
    finally:
        bad.unlink()
    assert "dxlab.records._tmp_violation imports dxlab.serving.app (records -> serving)" in found
    assert any("dxlab.training" in v for v in found)


def test_every_subpackage_resolves_and_no_generic_name_is_installed(tmp_path):
    # in a fresh interpreter outside the repo, as a user would import it
    code = (
        "import importlib, importlib.util, json, sys\n"
        "files = {m: importlib.import_module(m).__file__ for m in sys.argv[1:]}\n"
        "generic = {g: getattr(importlib.util.find_spec(g), 'origin', None) for g in "
        "('datasets', 'models', 'training', 'serving', 'records', 'configs', 'benchmarks', 'tests')}\n"
        "print(json.dumps([files, generic, importlib.import_module('dxlab').__version__]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, *FOLDERS.values()], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    import json

    files, generic, version = json.loads(result.stdout)
    for name, file in files.items():
        folder = [f for f, n in FOLDERS.items() if n == name][0]
        assert Path(file).resolve() == ROOT / folder / "__init__.py", name
    for name, origin in generic.items():
        assert origin is None or not Path(origin).resolve().is_relative_to(ROOT), f"{name!r} is importable from the repo"
    assert version != "0+unknown"


def test_importing_every_module_needs_no_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DXLAB_", "MLFLOW_"))}
    env["HOME"] = str(tmp_path / "no-such-home")
    modules = [_module_name(folder, p) for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))
               if p.name != "__main__.py"]
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
    result = subprocess.run([sys.executable, "-c", code, *modules], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "no-such-home").exists(), "importing wrote into the home folder"
