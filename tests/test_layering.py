"""The house's import rules, read from the source: the library depends on Keras only, the
training system never the other way round, a command never imports another command, and
private Keras internals are touched in one module only."""

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {"training.train", "training.generate", "training.evaluate", "training.fid_stats",
            "training.analyze"}


def _modules(package: str) -> dict[str, ast.Module]:
    return {".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"):
            ast.parse(path.read_text()) for path in (REPO / package).rglob("*.py")}


def _imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_library_imports_keras_and_itself_only():
    for name, tree in _modules("keras_bssn").items():
        # NumPy comes with Keras; TensorFlow, JAX or the training system must not.
        outside = ({imported.split(".")[0] for imported in _imports(tree)}
                   - set(sys.stdlib_module_names) - {"keras", "keras_bssn", "numpy"})
        assert not outside, f"{name} imports {sorted(outside)}"


def test_no_command_imports_another_command():
    for name, tree in _modules("training").items():
        others = (_imports(tree) & COMMANDS) - {name}
        assert not others, f"{name} imports the command(s) {sorted(others)}"


def test_only_the_internals_module_reaches_into_keras_src():
    for package in ("keras_bssn", "training"):
        for name, tree in _modules(package).items():
            if name != "keras_bssn._keras_internals":
                private = {imported for imported in _imports(tree)
                           if imported.startswith("keras.src")}
                assert not private, f"{name} imports {sorted(private)}"
