"""The import direction between layers: fs → tree → cache → client → (transport, providers).

Each layer imports only the one below it and the shared vocabulary; only the CLI imports the
emulator; the emulator imports only the vocabulary (the instance document, the errors). A
lower layer importing a higher one fails here, by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "imdsfs"

# Importable from anywhere: no I/O of their own, no layer above them.
VOCABULARY = {
    "_errors",
    "_paths",
    "_flight",
    "_settings",
    "_ttl",
    "_provider",
    "_document",
    "_gce_tree",
    "_azure_tree",
    "_ratelimit",
    "_logging",
    "_systemd",
}
# What each module may import besides the vocabulary.
ALLOWED: dict[str, set[str]] = {
    "_transport": set(),
    "providers": {
        "providers.ec2",
        "providers.gce",
        "providers.azure",
        "providers.openstack",
        "providers._detect",
    },
    "providers._detect": set(),
    "providers.ec2": {"_transport"},
    "providers.gce": {"_transport"},
    "providers.azure": {"_transport"},
    "providers.openstack": {"_transport", "providers.ec2"},
    "_client": {"_transport", "providers"},
    "_cache": {"_client"},
    "_tree": {"_cache"},
    "_budget": set(),
    "_introspect": {"_tree", "_cache"},
    "_watch": {"_cache"},
    "_fs": {"_tree", "_budget", "_introspect", "_watch"},
    "_wait": set(),
    "_snapshot": {"_client", "_cache", "_tree", "_config_drive"},
    "_config_drive": set(),
    "_fstab": set(),
    "_mount": {"_fs", "_tree", "_cache", "_client", "providers", "_snapshot"},
    "_cli": {
        "_mount",
        "_snapshot",
        "_introspect",
        "_fstab",
        "_fs",
        "_wait",
        "providers",
        "emulator",
    },
    "testing": set(),
    "__main__": {"_cli"},
    # The public surface re-exports from every layer; nothing inside imports it.
    "__init__": {"_cache", "_client", "_tree", "providers.ec2"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """The package's modules *path* imports at run time (``TYPE_CHECKING`` ones excluded)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # first, so that their imports are never walked
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    package = [part for part in package if part != "__init__"]
    imported: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = package[: len(package) - (node.level - 1)]
        target = [*base, *(node.module.split(".") if node.module else [])]
        for alias in node.names if not node.module else [None]:
            parts = target + ([alias.name] if alias is not None else [])
            imported.add(".".join(parts))
    return imported


def _top(name: str, modules: dict[str, Path]) -> str:
    """``emulator._state`` → ``emulator``; ``providers.ec2`` stays a module of its own."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    if name.startswith("emulator"):
        return "emulator"
    return name if name in modules else ""  # a name the package root defines


@pytest.mark.parametrize("module", sorted(ALLOWED) + sorted(VOCABULARY))
def test_each_layer_imports_only_the_one_below_and_the_vocabulary(module: str) -> None:
    modules = _modules()
    imported = {_top(m, modules) for m in _imports(module, modules[module])} - {module, ""}
    allowed = VOCABULARY | ALLOWED.get(module, set())
    assert imported <= allowed, f"{module} imports {sorted(imported - allowed)}"


def test_the_emulator_imports_only_the_vocabulary() -> None:
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("emulator"):
            imported = {_top(m, modules) for m in _imports(name, path)} - {"emulator", ""}
            assert imported <= VOCABULARY, f"{name} imports {sorted(imported - VOCABULARY)}"


def test_only_the_cli_imports_the_emulator() -> None:
    modules = _modules()
    importers = {
        name
        for name, path in modules.items()
        if not name.startswith("emulator")
        and "emulator" in {_top(m, modules) for m in _imports(name, path)}
    }
    assert importers == {"_cli"}


def test_every_module_has_its_place() -> None:
    modules = {name for name in _modules() if not name.startswith("emulator")}
    assert modules - {""} <= set(ALLOWED) | VOCABULARY
