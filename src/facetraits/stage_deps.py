"""Which project files each DVC stage runs, read from its script's imports, so that dvc.yaml's `deps` cannot
drift from the code: a stage whose library code changed must rerun (`facetraits stage-deps` rewrites them,
tests/test_stage_deps.py fails when they are stale)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from facetraits.errors import ConfigError
from facetraits.files import atomic_write_text

PACKAGE = "facetraits"
SOURCE_ROOT = "src"
_SCRIPT = re.compile(r"python\s+(pipelines/\S+\.py)")


def _module_file(source_root: Path, module: str) -> Path | None:
    path = source_root.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _package_of(source_root: Path, file: Path) -> str:
    parts = file.relative_to(source_root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts[:-1])


def _imported_modules(file: Path, source_root: Path) -> set[str]:
    """Every project module `file` imports, anywhere in it (lazy imports inside functions count: they run too)."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    here = _package_of(source_root, file) if file.is_relative_to(source_root) else ""
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            modules.add(origin)
            modules.update(f"{origin}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {m for m in modules if m == PACKAGE or m.startswith(PACKAGE + ".")}


def import_closure(script: Path, source_root: Path) -> set[Path]:
    """The project files that running `script` imports, transitively, with every package `__init__.py` on the
    way (importing a.b.c runs a/__init__.py and a/b/__init__.py first)."""
    seen: set[Path] = set()
    pending = [script]
    while pending:
        file = pending.pop()
        for module in _imported_modules(file, source_root):
            parts = module.split(".")
            for depth in range(1, len(parts) + 1):
                found = _module_file(source_root, ".".join(parts[:depth]))
                if found is not None and found not in seen:
                    seen.add(found)
                    pending.append(found)
    return seen


def _compact(files: set[Path], source_root: Path) -> list[Path]:
    """Whole packages where every module of a package is needed (a folder dep), single files elsewhere."""
    chosen: list[Path] = []

    def visit(folder: Path) -> None:
        modules = {p for p in folder.rglob("*.py") if "__pycache__" not in p.parts}
        if folder != source_root / PACKAGE and modules and modules <= files:
            chosen.append(folder)
            return
        chosen.extend(sorted(p for p in folder.glob("*.py") if p in files))
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
            visit(sub)

    visit(source_root / PACKAGE)
    return chosen


def stage_scripts(pipeline: dict) -> dict[str, str]:
    """Stage name -> the pipelines/ script its command runs."""
    scripts = {}
    for name, stage in pipeline["stages"].items():
        found = _SCRIPT.search(stage.get("do", stage)["cmd"])
        if found is not None:
            scripts[name] = found.group(1)
    return scripts


def code_deps(project_root: Path, script: str) -> list[str]:
    """The `deps` entries (relative to the project root) that cover the project code `script` runs."""
    source_root = project_root / SOURCE_ROOT
    closure = import_closure(project_root / script, source_root)
    return [p.relative_to(project_root).as_posix() for p in _compact(closure, source_root)]


def _covered(file: str, deps: list[str]) -> bool:
    return any(file == dep or file.startswith(dep.rstrip("/") + "/") for dep in deps)


def missing_deps(project_root: Path) -> dict[str, list[str]]:
    """Stage -> project files its script imports that none of its `deps` covers (empty when none is missing)."""
    pipeline = yaml.safe_load((project_root / "dvc.yaml").read_text(encoding="utf-8"))
    source_root = project_root / SOURCE_ROOT
    missing = {}
    for name, script in stage_scripts(pipeline).items():
        stage = pipeline["stages"][name]
        deps = [dep for dep in stage.get("do", stage).get("deps", []) if isinstance(dep, str)]
        closure = import_closure(project_root / script, source_root)
        needed = [script] + sorted(file.relative_to(project_root).as_posix() for file in closure)
        absent = [file for file in needed if not _covered(file, deps)]
        if absent:
            missing[name] = absent
    return missing


def _rewrite_deps(lines: list[str], start: int, generated: list[str]) -> tuple[list[str], int]:
    """The `deps:` block starting at line `start` with its src/ entries replaced by `generated`, placed after
    the stage script's entry; other entries and comments stay where they are."""
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    block = lines[start + 1 : end]
    item = next(line for line in block if line.lstrip().startswith("- "))
    prefix = item[: len(item) - len(item.lstrip())] + "- "
    kept: list[str] = []
    for line in block:
        entry = line.strip()[2:].split("#")[0].strip() if line.lstrip().startswith("- ") else None
        if entry is not None and entry.startswith(SOURCE_ROOT + "/"):
            continue
        kept.append(line)
        if entry is not None and entry.startswith("pipelines/"):
            kept.extend(f"{prefix}{dep}\n" for dep in generated)
    return [lines[start], *kept], end


def write_stage_deps(project_root: Path) -> Path:
    """Rewrite dvc.yaml so each stage's src/ deps are exactly what its script imports; the rest of the file,
    comments included, is left as written."""
    path = project_root / "dvc.yaml"
    text = path.read_text(encoding="utf-8")
    pipeline = yaml.safe_load(text)
    scripts = stage_scripts(pipeline)
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    stage = None
    index = 0
    while index < len(lines):
        line = lines[index]
        header = re.match(r"^  ([A-Za-z_][\w-]*):\s*(#.*)?$", line)
        if header:
            stage = header.group(1)
        elif not line.startswith(" ") and line.strip():
            stage = None
        if stage in scripts and re.match(r"^\s+deps:\s*(#.*)?$", line):
            block, index = _rewrite_deps(lines, index, code_deps(project_root, scripts[stage]))
            out.extend(block)
            continue
        out.append(line)
        index += 1
    rewritten = "".join(out)
    before, after = pipeline["stages"], yaml.safe_load(rewritten)["stages"]
    if set(before) != set(after):
        raise ConfigError(f"{path}: rewriting deps changed the stages ({sorted(before)} -> {sorted(after)})")
    atomic_write_text(path, rewritten)
    return path
