"""The package's layout is its data flow: config -> models/data -> training -> sweeps ->
analysis -> cli. No module imports a later stage, nothing imports in a cycle, nothing
imports another module's private names, and every module stays small."""

import ast
from pathlib import Path

import pytest

SUITE = Path(__file__).parent.parent / "suite"
# The stage of each top-level module or folder; imports may only go to the same or earlier.
STAGES = {
    "errors": 0, "files": 0, "fmt": 0, "provenance": 0, "tasks": 0, "extend": 0, "plugins": 0,
    "config": 1,
    "models": 2, "data": 2, "platform": 2, "training": 3, "weights": 3.5, "inference": 3.5,
    "sweeps": 4, "analysis": 5, "benchmarks": 5,
    "cli": 6, "api": 6, "__main__": 6, "__init__": 0,
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SUITE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(SUITE.rglob("*.py"))}


def stage(module: str) -> int:
    parts = module.split(".")
    return STAGES[parts[1]] if len(parts) > 1 else 0


def imports(module: str) -> list[tuple[str, list[str], int]]:
    """Every suite module this one imports (anywhere in it), with the names it takes."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("suite")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if not base.startswith("suite"):
                continue
            for alias in node.names:  # "from suite import config" imports a module
                target = f"{base}.{alias.name}"
                if target in MODULES:
                    found.append((target, [], node.lineno))
                else:
                    found.append((base, [alias.name], node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    return {m: {target for target, _, _ in imports(m) if target in MODULES and target != m}
            for m in MODULES}


def test_no_module_imports_a_later_stage():
    late = [f"{m} (stage {stage(m)}) imports {t} (stage {stage(t)}) at line {line}"
            for m in MODULES for t, _, line in imports(m)
            if t in MODULES and stage(t) > stage(m)]
    assert late == []


def test_there_are_no_import_cycles():
    edges, state, cycles = graph(), {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_private_name_is_imported_across_modules():
    private = [f"{m} imports {name} from {t}" for m in MODULES for t, names, _ in imports(m)
               for name in names if name.startswith("_")]
    assert private == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module):
    path = MODULES[module]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path} is over {MAX_MODULE_LINES} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            doc = ast.get_docstring(node) or ""
            assert length <= MAX_FUNCTION_LINES or "Long because" in doc, (
                f"{path}:{node.lineno} {node.name} has {length} lines and no reason "
                "('Long because ...') in its docstring")


def test_the_listing_reads_as_the_flow():
    folders = sorted(p.name for p in SUITE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == ["analysis", "benchmarks", "cli", "config", "data", "inference", "models",
                       "platform", "sweeps", "training", "weights"]


# Where a newcomer looks for a thing, by the question they have.
HOMES = {
    "training": {"checkpoint", "figures", "lock", "optim", "periodic", "preflight", "run_folder",
                 "steps", "stop", "trainer", "warm_start", "writers"},  # the loop and its folder
    "weights": {"official", "hf_format", "safe_pickle"},  # where weights come in
    "inference": {"predict", "user_inputs"},  # a trained run put to use
    "platform": {"devices", "hosts", "sharding", "doctor"},  # what runs where
}


@pytest.mark.parametrize("folder", sorted(HOMES))
def test_each_folder_holds_its_own_job_and_training_at_most_a_dozen(folder):
    found = {p.stem for p in (SUITE / folder).glob("*.py") if p.stem != "__init__"}
    assert found == HOMES[folder]
    assert len(HOMES["training"]) <= 12
