"""Mechanical guards of the "written once" rule: no function body exists twice in the library, the
formulas the export used to copy have one definition each, and every network class a detector
trains bundles into a model.py that passes the benchmark's static rules."""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import re
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIBRARY = [path for root in ("detectors", "calibration", "export") for path in sorted((REPO / root).rglob("*.py"))]
MIN_NODES = 40  # smaller bodies (a two-line helper, a property) may legitimately coincide


class _AlphaRename(ast.NodeTransformer):
    """Names and arguments renamed in order of appearance, annotations dropped: a copy with renamed
    variables compares equal to its original."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def _rename(self, name: str) -> str:
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self._rename(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg, node.annotation = self._rename(node.arg), None
        return node


def _normalised_bodies(path: Path, root: Path = REPO):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = list(node.body)
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
            body = body[1:]  # the docstring
        size = sum(1 for statement in body for _ in ast.walk(statement))
        if size < MIN_NODES:
            continue
        function = copy.deepcopy(node)
        function.body, function.name, function.decorator_list, function.returns = body, "f", [], None
        yield (
            ast.dump(_AlphaRename().visit(function), annotate_fields=False),
            f"{path.relative_to(root)}:{node.lineno} {node.name}",
        )


def test_no_function_body_is_written_twice():
    found: dict[str, list[str]] = defaultdict(list)
    for path in LIBRARY:
        for key, where in _normalised_bodies(path):
            found[key].append(where)
    copies = [places for places in found.values() if len(places) > 1]
    assert not copies, f"the same function body (up to renamed variables) exists more than once: {copies}"


def test_the_guard_finds_a_renamed_copy(tmp_path):
    original = "def a(x, y):\n    z = x + y\n    for i in range(3):\n        z = z * x - y / (i + 1)\n    return [z, x, y, z * z]\n"
    copy_text = original.replace("def a(x, y)", "def b(p, q)").replace("x", "p").replace("y", "q")
    (tmp_path / "one.py").write_text(original)
    (tmp_path / "two.py").write_text(copy_text)
    keys = [key for name in ("one.py", "two.py") for key, _ in _normalised_bodies(tmp_path / name, tmp_path)]
    assert len(keys) == 2 and keys[0] == keys[1]


@pytest.mark.parametrize(
    "pattern, what",
    [
        (r"rad2deg\(\s*torch\.acos", "ReStraV's turning angle"),
        (r"kernel_size=\(1, 3, 3\)", "CakeLens' spatial convolution"),
        (r"kernel_size=\(3, 1, 1\)", "CakeLens' temporal convolution"),
        (r"def trajectory_features\(", "ReStraV's 21 features"),
        (r"def cakelens_framesets\(", "CakeLens' framing"),
        (r"torch\.logsumexp\(F\.logsigmoid", "the mean of per-frameset sigmoids"),
    ],
)
def test_formulas_the_export_used_to_copy_have_one_definition(pattern, what):
    hits = [
        f"{path.relative_to(REPO)}:{text[: match.start()].count(chr(10)) + 1}"
        for path in LIBRARY
        for text in [path.read_text(encoding="utf-8")]
        for match in re.finditer(pattern, text)
    ]
    expected = 2 if "logsigmoid" in pattern else 1  # log p and log (1 - p), in one function
    assert len(hits) == expected, f"{what}: {hits}"


def _network_classes():
    from detectors.networks.layers import DetectorNetwork
    from detectors.registry import detector_class, list_detectors

    classes = {}
    for arch in list_detectors():
        module = importlib.import_module(detector_class(arch).__module__)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, DetectorNetwork)
                and value is not DetectorNetwork
                and value.__module__.startswith("detectors.")
            ):
                classes[f"{arch}:{value.__name__}"] = value
    return classes


@pytest.mark.parametrize("name", sorted(_network_classes()))
def test_every_network_bundles_into_a_model_py_that_passes_the_static_rules(name):
    from detectors.networks.layers import CalibratedNetwork
    from export.bundle import bundle
    from export.check import check_model_source

    source = bundle(
        _network_classes()[name],
        extra=(CalibratedNetwork,),
        footer="def load_model(weights_path, num_classes=2, **kwargs):\n    return None\n",
    )
    assert check_model_source(source) == []
    assert "import detectors" not in source and "from detectors" not in source
    compile(source, "model.py", "exec")  # one self-contained, syntactically complete file
