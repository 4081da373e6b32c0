"""Assemble a submission's single ``model.py`` from the very classes the detectors train.

The benchmark loads ``model.py`` on its own (no ``sys.path`` entry, this project not installed), so
the exported network must be one self-contained file. Rather than keep a second, export-only copy
of every network, :func:`bundle` starts from the network class a detector trains and copies,
verbatim, its source and everything it refers to that is defined in this project (base classes,
layers, helper functions, module constants), recursively, in dependency order. Names imported from
modules the benchmark allows (``torch``, ``math``, ``typing``, ...) become import lines at the top.
Anything else a network refers to (``lightning``, the data pipeline, a non-allowed library) is an
error naming the network, the name and its origin, raised at export time rather than in the
benchmark's sandbox.

Network code therefore follows the rules of ``detectors/networks/layers.py``: torch, math and typing
only, no ``getattr``/``setattr``/``eval``; annotations resolve to allowed names.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

# Packages whose definitions are copied into model.py (everything else must be an allowed import).
PROJECT_PACKAGES = ("detectors", "calibration", "export")
# Modules model.py may import (the benchmark's allow-list; see export.check.ALLOWED_IMPORTS).
ALLOWED_IMPORT_ROOTS = (
    "torch",
    "torchvision",
    "torchaudio",
    "math",
    "functools",
    "typing",
    "collections",
    "dataclasses",
    "enum",
    "abc",
    "numpy",
    "safetensors",
)


class BundleError(ValueError):
    """A network refers to something model.py cannot contain or import."""


@dataclass
class _Definition:
    module: str
    name: str
    text: str
    line: int
    dependencies: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _ModuleSource:
    module: ModuleType
    path: str
    lines: list[str]
    tree: ast.Module

    @classmethod
    def of(cls, name: str) -> _ModuleSource:
        module = sys.modules.get(name) or importlib.import_module(name)
        path = inspect.getsourcefile(module)
        if path is None:
            raise BundleError(f"no source file for module {name}")
        text = Path(path).read_text(encoding="utf-8")
        return cls(module, path, text.splitlines(), ast.parse(text, filename=path))

    def top_level(self, name: str) -> ast.stmt | None:
        """The top-level def/class/assignment that binds ``name`` (the last one wins, as at runtime)."""
        found = None
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.name == name:
                found = node
            elif isinstance(node, ast.Assign) and any(_binds(target, name) for target in node.targets):
                found = node
            elif isinstance(node, ast.AnnAssign) and _binds(node.target, name) and node.value is not None:
                found = node
        return found

    def import_of(self, name: str) -> ast.stmt | None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if (alias.asname or alias.name.split(".")[0]) == name:
                        return node
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        return node
        return None

    def segment(self, node: ast.stmt) -> str:
        """Source lines of ``node`` with its decorators and the comment lines right above it."""
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
        while start > 0 and self.lines[start - 1].lstrip().startswith("#"):
            start -= 1
        return "\n".join(self.lines[start : node.end_lineno])


def _binds(target: ast.expr, name: str) -> bool:
    if isinstance(target, ast.Name):
        return target.id == name
    if isinstance(target, (ast.Tuple, ast.List)):
        return any(_binds(element, name) for element in target.elts)
    return False


class _FreeNames(ast.NodeVisitor):
    """Names a definition reads from its module's globals (function scopes resolved, roughly as
    Python does: arguments and assignments are local; a class body is not visible to its methods)."""

    def __init__(self) -> None:
        self.free: list[str] = []

    def read(self, name: str, local: set[str]) -> None:
        if name not in local and name not in self.free:
            self.free.append(name)

    def visit_scope(self, body: list[ast.AST], local: set[str]) -> None:
        local = set(local) | _assigned(body)
        for statement in body:
            self._visit(statement, local)

    def _visit(self, node: ast.AST, local: set[str]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            arguments = node.args
            for default in [*arguments.defaults, *arguments.kw_defaults]:
                if default is not None:
                    self._visit(default, local)
            if not isinstance(node, ast.Lambda):
                for decorator in node.decorator_list:
                    self._visit(decorator, local)
                for argument in [
                    *arguments.posonlyargs,
                    *arguments.args,
                    *arguments.kwonlyargs,
                    arguments.vararg,
                    arguments.kwarg,
                ]:
                    if argument is not None and argument.annotation is not None:
                        self._visit(argument.annotation, local)
                if node.returns is not None:
                    self._visit(node.returns, local)
            names = {
                a.arg
                for a in [
                    *arguments.posonlyargs,
                    *arguments.args,
                    *arguments.kwonlyargs,
                    arguments.vararg,
                    arguments.kwarg,
                ]
                if a is not None
            }
            body = node.body if isinstance(node.body, list) else [node.body]
            self.visit_scope(body, local | names)
            return
        if isinstance(node, ast.ClassDef):
            for item in [*node.bases, *node.keywords, *node.decorator_list]:
                self._visit(item, local)
            # the class body sees the enclosing scope; its own names are not visible to its methods
            class_local = set(local) | _assigned(node.body)
            for statement in node.body:
                self._visit(
                    statement, local if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)) else class_local
                )
            return
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            targets = {
                n.id for generator in node.generators for n in ast.walk(generator.target) if isinstance(n, ast.Name)
            }
            for child in ast.iter_child_nodes(node):
                self._visit(child, local | targets)
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            self.read(node.id, local)
            return
        for child in ast.iter_child_nodes(node):
            self._visit(child, local)


def _assigned(body: list[ast.AST]) -> set[str]:
    """Names bound directly in a scope's statements (not inside nested functions or classes)."""
    names: set[str] = set()
    stack = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _free_names(node: ast.stmt) -> list[str]:
    visitor = _FreeNames()
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        visitor.visit_scope([node.value] if node.value is not None else [], set())
    else:
        visitor._visit(node, set())
    return visitor.free


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.rsplit(".", node.level)[0] if "." in module else module
    base = sys.modules[module].__package__ or package
    for _ in range(node.level - 1):
        base = base.rsplit(".", 1)[0]
    return f"{base}.{node.module}" if node.module else base


def _is_allowed(module: str) -> bool:
    return module.split(".")[0] in ALLOWED_IMPORT_ROOTS


def _is_project(module: str) -> bool:
    return module.split(".")[0] in PROJECT_PACKAGES


class _Bundler:
    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.sources: dict[str, _ModuleSource] = {}
        self.definitions: dict[tuple[str, str], _Definition] = {}
        self.order: list[tuple[str, str]] = []
        self.imports: dict[str, list[str]] = {}  # "from m import" / "import" -> names, first-seen order
        self.emitted_names: dict[str, tuple[str, str]] = {}
        self._visiting: set[tuple[str, str]] = set()

    def source(self, module: str) -> _ModuleSource:
        if module not in self.sources:
            self.sources[module] = _ModuleSource.of(module)
        return self.sources[module]

    def require(self, module: str, name: str) -> None:
        """Copy the top-level definition ``name`` of ``module`` and, first, what it needs."""
        key = (module, name)
        if key in self.definitions or key in self._visiting:
            return
        src = self.source(module)
        node = src.top_level(name)
        if node is None:
            raise BundleError(f"{self.origin}: cannot find the definition of {name} in {src.path}")
        clash = self.emitted_names.get(name)
        if clash is not None and clash != key:
            raise BundleError(
                f"{self.origin}: two definitions named {name} ({clash[0]} and {module}) would meet in "
                "model.py; rename one"
            )
        self.emitted_names[name] = key
        self._visiting.add(key)
        definition = _Definition(module, name, src.segment(node), node.lineno)
        for free in _free_names(node):
            if free == name:
                continue
            resolved = self.resolve(module, free, name)
            if resolved is not None:
                definition.dependencies.append(resolved)
                self.require(*resolved)
        self._visiting.discard(key)
        self.definitions[key] = definition
        self.order.append(key)

    def resolve(self, module: str, free: str, user: str) -> tuple[str, str] | None:
        """Where the name ``free``, read by ``user`` in ``module``, comes from: a definition to copy
        (returned), an allowed import (recorded), or a builtin (nothing)."""
        src = self.source(module)
        namespace = vars(src.module)
        if src.top_level(free) is not None:
            return module, free
        statement = src.import_of(free)
        if statement is None:
            if free in namespace or not hasattr(builtins, free):
                raise BundleError(
                    f"{self.origin}: {user} ({src.path}) uses {free!r}, which is neither defined "
                    "nor imported at the top level of its module"
                )
            return None  # a builtin
        if isinstance(statement, ast.Import):
            alias = next(a for a in statement.names if (a.asname or a.name.split(".")[0]) == free)
            if not _is_allowed(alias.name):
                raise BundleError(
                    f"{self.origin}: {user} ({src.path}) uses the module {alias.name}, which a "
                    "submission's model.py may not import"
                )
            line = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
            self.imports.setdefault(line, [])
            return None
        alias = next(a for a in statement.names if (a.asname or a.name) == free)
        origin_module = _absolute(module, statement)
        if _is_allowed(origin_module):
            names = self.imports.setdefault(f"from {origin_module} import", [])
            entry = alias.name + (f" as {alias.asname}" if alias.asname else "")
            if entry not in names:
                names.append(entry)
            return None
        if _is_project(origin_module):
            value = namespace.get(free)
            defined_in = getattr(value, "__module__", None) or origin_module
            target = (
                (defined_in, alias.name)
                if self.source(defined_in).top_level(alias.name)
                else (origin_module, alias.name)
            )
            if alias.asname and alias.asname != alias.name:
                raise BundleError(
                    f"{self.origin}: {user} imports {alias.name} as {alias.asname}; network code must "
                    "use project names unaliased"
                )
            return target
        raise BundleError(
            f"{self.origin}: {user} ({src.path}) uses {free!r} from {origin_module}, which a "
            "submission's model.py may not import (network code may use torch, math and typing)"
        )

    def import_lines(self) -> list[str]:
        lines = []
        for head, names in self.imports.items():
            lines.append(f"{head} {', '.join(names)}" if names else head)
        return lines


def bundle(root: type, *, extra: tuple[type, ...] = (), header: str = "", footer: str = "") -> str:
    """Source of a self-contained module defining ``root`` and ``extra`` (and what they use)."""
    bundler = _Bundler(f"{root.__module__}.{root.__qualname__}")
    for obj in (*extra, root):
        bundler.require(obj.__module__, obj.__qualname__)
    for line in ("from safetensors.torch import load_file",):
        bundler.imports.setdefault(line.rsplit(" ", 1)[0], []).append(line.rsplit(" ", 1)[1])
    parts = [header.rstrip("\n"), "\n".join(bundler.import_lines())] if header else ["\n".join(bundler.import_lines())]
    for module, keys in _module_order(bundler):
        path = Path(bundler.sources[module].path)
        parts.append(f"# {'-' * 30} {_display(path)} {'-' * 30}")
        parts += [bundler.definitions[key].text for key in keys]
    if footer:
        parts.append(footer.strip("\n"))
    return "\n\n\n".join(parts).rstrip("\n") + "\n"


def _module_order(bundler: _Bundler) -> list[tuple[str, list[tuple[str, str]]]]:
    """Definitions grouped by module, each group in source order, modules after the modules they
    use (as their imports ran); a cycle between modules falls back to the dependency-first order."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for key in bundler.order:
        groups.setdefault(key[0], []).append(key)
    uses = {
        module: {dep[0] for key in keys for dep in bundler.definitions[key].dependencies} - {module}
        for module, keys in groups.items()
    }
    ordered: list[str] = []
    state: dict[str, str] = {}

    def visit(module: str) -> bool:
        if state.get(module) == "done":
            return True
        if state.get(module) == "visiting":
            return False  # a cycle
        state[module] = "visiting"
        ok = all(visit(other) for other in sorted(uses[module], key=list(groups).index))
        state[module] = "done"
        ordered.append(module)
        return ok

    if not all([visit(module) for module in groups]):
        return [(key[0], [key]) for key in bundler.order]
    return [(module, sorted(groups[module], key=lambda k: bundler.definitions[k].line)) for module in ordered]


def _display(path: Path) -> str:
    """``detectors/video/restrav.py`` for files of this repository, the file name otherwise."""
    root = Path(__file__).resolve().parent.parent
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return path.name


def defined_names(source: str) -> set[str]:
    """Top-level class and function names of a generated model.py."""
    return {node.name for node in ast.parse(source).body if isinstance(node, (ast.ClassDef, ast.FunctionDef))}


__all__ = ["BundleError", "bundle", "defined_names"]
