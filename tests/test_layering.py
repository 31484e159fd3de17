"""The house's import rules, read from the source: the library depends on Keras only, the
training system never the other way round (nor does the library carry the trainer's
machinery), a command never imports another command, and `keras.src` is imported in one
module only."""

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {"training.train", "training.generate", "training.evaluate", "training.fid_stats",
            "training.analyze", "training.feature_classifier"}


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
        # NumPy is declared with Keras (pyproject.toml); TensorFlow, JAX or the training
        # system must not be imported.
        outside = ({imported.split(".")[0] for imported in _imports(tree)}
                   - set(sys.stdlib_module_names) - {"keras", "keras_bssn", "numpy"})
        assert not outside, f"{name} imports {sorted(outside)}"


# The trainer's machinery, named anywhere (the fit patch lives in training.keras_fit_fix).
TRAINER_MACHINERY = ("MultiWorkerFitMixin", "_make_function", "_maybe_symbolic_build")
# Names the trainer's code uses; prose may speak of a GAN or of the user's `train_step`.
TRAINER_IDENTIFIER = re.compile(r"GAN|(^|_)gan($|_)|^train_step$")


def _identifiers(tree: ast.Module) -> set[str]:
    """The names the code defines, reads or imports (not its strings or docstrings)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name)
    return names


def test_the_library_has_no_trace_of_the_gan_trainer():
    for path in (REPO / "keras_bssn").rglob("*.py"):
        source = path.read_text()
        tree = ast.parse(source)
        trainer_imports = {imported for imported in _imports(tree)
                           if imported.split(".")[0] in ("tensorflow", "training")}
        assert not trainer_imports, f"{path.name} imports {sorted(trainer_imports)}"
        mentioned = [name for name in TRAINER_MACHINERY if name in source]
        assert not mentioned, f"{path.name} mentions {mentioned}"
        trainer_names = sorted(name for name in _identifiers(tree)
                               if TRAINER_IDENTIFIER.search(name))
        assert not trainer_names, f"{path.name} uses the trainer's names {trainer_names}"


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
