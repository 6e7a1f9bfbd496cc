"""The layer rules of docs/architecture.md, read off the source: which folders may import torch,
Prefect, FastAPI and MLflow, and which layers may import which.

Layers: the library (``platform/attnloop`` but ``apps``), its torch part (:data:`TORCH_LAYER`),
the applications (``attnloop.apps``), the flows (``flows/``) and the serving service (``serving/``).
Every import counts, at module level or inside a function; a rule names what may break it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = ("torch", "torchvision")
# the part of the library that trains and exports models: it may import torch, and the rest of the
# library may reach it only from inside a function (so importing the rest never loads torch)
TORCH_LAYER = ("attnloop.models", "attnloop.training", "attnloop.guidance", "attnloop.mining", "attnloop.export", "attnloop.publish")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module, absolute
    top_level: bool  # runs when the module is imported (not inside a function)
    line: int


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT / "platform") if path.is_relative_to(ROOT / "platform") else path.relative_to(ROOT)
    parts = rel.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str | None = None) -> list[Import]:
    module = module or _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inside = {id(inner) for f in functions for inner in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]  # ``from package import module`` imports the module
        else:
            continue
        out += [Import(module, target, id(node) not in inside, node.lineno) for target in targets]
    return out


def _sources() -> list[Path]:
    return sorted([*(ROOT / "platform" / "attnloop").rglob("*.py"), *(ROOT / "flows").rglob("*.py"), *(ROOT / "serving").rglob("*.py")])


IMPORTS = [imp for path in _sources() for imp in _imports(path)]


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layer(module: str) -> str:
    if _under(module, "attnloop.apps") or module == "attnloop.__main__":  # ``python -m attnloop`` runs the command line
        return "apps"
    if _under(module, *TORCH_LAYER):
        return "torch"
    if _under(module, "attnloop"):
        return "library"
    return module.split(".")[0]  # flows, serving


RULES = {
    # torch stays in the torch layer: the rest of the library reaches that layer only from inside
    # functions and never imports torch; flows and serving (ONNX Runtime alone) never import either
    "torch": lambda i: (layer(i.module) in ("library", "flows", "serving") and _under(i.target, *TORCH))
    or (layer(i.module) == "library" and i.top_level and _under(i.target, *TORCH_LAYER))
    or (layer(i.module) == "serving" and _under(i.target, *TORCH_LAYER)),
    "prefect": lambda i: _under(i.target, "prefect", "prefect_dask") and layer(i.module) not in ("flows", "apps"),
    "fastapi": lambda i: _under(i.target, "fastapi", "starlette", "uvicorn") and layer(i.module) != "serving",
    "mlflow": lambda i: _under(i.target, "mlflow") and not _under(i.module, "attnloop.registry", "attnloop.apps"),
    "library": lambda i: layer(i.module) in ("library", "torch") and _under(i.target, "attnloop.apps", "flows", "serving"),
    "flows": lambda i: layer(i.module) == "flows" and _under(i.target, "attnloop.apps", "serving"),
    "serving": lambda i: layer(i.module) == "serving" and _under(i.target, "attnloop.apps", "flows"),
}


def broken(rule: str, imports: list[Import] | None = None) -> list[str]:
    return [f"{imp.module}:{imp.line} imports {imp.target}" for imp in (IMPORTS if imports is None else imports) if RULES[rule](imp)]


def test_the_source_tree_is_what_the_rules_describe():
    layers = {layer(imp.module) for imp in IMPORTS}
    assert layers == {"library", "torch", "apps", "flows", "serving"}
    assert any(_under(imp.target, "torch") for imp in IMPORTS)  # the reader sees imports inside functions too
    assert any(not imp.top_level and _under(imp.target, "attnloop.training") for imp in IMPORTS)


def test_torch_stays_in_the_torch_layer():
    assert broken("torch") == []


def test_prefect_lives_in_the_flows_and_the_applications():
    assert broken("prefect") == []


def test_fastapi_lives_in_serving():
    assert broken("fastapi") == []


def test_mlflow_lives_in_the_registry():
    assert broken("mlflow") == []


def test_the_library_imports_no_application_flow_or_service():
    assert broken("library") == []


def test_flows_and_serving_never_import_the_applications():
    assert broken("flows") == [] and broken("serving") == []


@pytest.mark.parametrize(
    "module, statement, rule",
    [
        ("attnloop.probe", "import torch", "torch"),
        ("attnloop.probe", "from attnloop import training", "torch"),
        ("serving.probe", "from attnloop.training import train", "torch"),
        ("attnloop.probe", "from flows.loop import loop", "library"),
        ("attnloop.probe", "import prefect", "prefect"),
        ("flows.probe", "from attnloop.apps.demo import run_demo", "flows"),
        ("serving.probe", "import flows.loop", "serving"),
        ("attnloop.priority.probe", "from ..apps import bench", "library"),
        ("attnloop.probe", "import fastapi", "fastapi"),
    ],
)
def test_a_rule_breaker_is_caught(tmp_path, module, statement, rule):
    """A forbidden import breaks its rule wherever it is written (module level or in a function; the
    torch layer from inside a library function is the one import allowed there)."""
    path = tmp_path / "probe.py"
    for body, top_level in ((f"{statement}\n", True), (f"def f():\n    {statement}\n", False)):
        path.write_text(body)
        found = _imports(path, module)
        allowed = statement == "from attnloop import training" and not top_level
        assert bool(broken(rule, found)) is not allowed, (body, found)


def test_importing_the_library_outside_the_torch_layer_loads_no_torch():
    """What the static rules promise, checked in a fresh interpreter: scoring, selection, Label Studio,
    the registry, the stores and serving run without torch."""
    modules = sorted({imp.module for imp in IMPORTS if layer(imp.module) in ("library", "serving") and not imp.module.endswith("__main__")})
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'prefect')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"importing {len(modules)} modules loaded {out.stdout.strip()[:300]}"


def _declared() -> set[str]:
    """The distributions pyproject.toml's dependencies name, with what their named extras bring
    (``dask[distributed]`` → ``distributed``), canonical names."""
    import importlib.metadata as md
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    names = set()
    for requirement in map(Requirement, tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]):
        names.add(canonicalize_name(requirement.name))
        for needed in map(Requirement, md.requires(requirement.name) or []):
            if needed.marker and any(needed.marker.evaluate({"extra": extra}) for extra in requirement.extras):
                names.add(canonicalize_name(needed.name))
    return names


def test_every_third_party_import_of_the_shipped_code_is_declared():
    """A fresh ``make setup`` installs only what pyproject.toml names: a module the library, the flows
    or the service import must come from a declared distribution, not one that another happens to pull in."""
    import importlib.metadata as md

    from packaging.utils import canonicalize_name

    declared = _declared()
    owners = md.packages_distributions()
    missing = {}
    for imp in IMPORTS:
        top = imp.target.split(".")[0]
        if top in sys.stdlib_module_names or top in ("attnloop", "flows", "serving"):
            continue
        dists = {canonicalize_name(d) for d in owners.get(top, [top])}
        if not dists & declared:
            missing.setdefault(top, f"{imp.module}:{imp.line}")
    assert not missing, f"imported but not declared in pyproject.toml's dependencies: {missing}"
