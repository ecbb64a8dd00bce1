"""Two ways of writing Python that mypyc 2.4 builds into something else, kept out of the modules of
its group (setup.py's COMPILED). Both were found when the call journal and the call plan joined it:
the differential tests caught them on the build, these rules keep them out of every module.

- A class annotating again an attribute one of its bases declares: mypyc gives the class a second
  field of that name and reports the object held there twice to the cyclic collector, which then
  counts one reference too many, so a cycle through it is never freed (``CallPlan.nodes``, declared
  by ``plan_nodes.Host``: on the build a plan left in a cycle outlived every ``gc.collect()``,
  tests/routing/test_plan_dispose.py).
- A call in a slice's bounds, on a value mypyc slices generically (a memoryview, a list of objects):
  the build evaluates the call twice, throwing the first result away (``view[os.write(fd, view):]``
  wrote every journal frame twice: tests/server/test_call_journal.py). Only calls known to have no
  effect (``len``, ``find``, ``index``...) may stand there."""

from __future__ import annotations

import ast
import re

from tests.extensions import ROOT

PURE_CALLS = frozenset({"len", "find", "rfind", "index", "rindex", "start", "end", "min", "max"})


def _compiled_trees() -> dict[str, ast.Module]:
    setup = (ROOT / "setup.py").read_text(encoding="utf-8")
    listed = re.search(r"COMPILED = \[(.*?)\n\]", setup, re.S)
    assert listed is not None
    names = re.findall(r'"([^"]+\.py)"', listed.group(1))
    assert "routing/plan.py" in names and "server/call_journal.py" in names
    return {name: ast.parse((ROOT / name).read_text(encoding="utf-8")) for name in names}


def _declared(cls: ast.ClassDef) -> set[str]:
    """Attributes ``cls`` annotates: in its body, or as ``self.x: T`` in its methods."""
    names = {s.target.id for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    for method in (s for s in cls.body if isinstance(s, ast.FunctionDef)):
        for s in ast.walk(method):
            target = s.target if isinstance(s, ast.AnnAssign) else None
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                names.add(target.attr)
    return names


def test_no_compiled_class_declares_an_inherited_attribute_again() -> None:
    classes: dict[str, tuple[list[str], set[str]]] = {}
    for tree in _compiled_trees().values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                classes[node.name] = ([b.id for b in node.bases if isinstance(b, ast.Name)], _declared(node))
    assert "Host" in classes["CallPlan"][0]

    def inherited(name: str) -> set[str]:
        out: set[str] = set()
        for base in classes.get(name, ([], set()))[0]:
            if base in classes:
                out |= classes[base][1] | inherited(base)
        return out

    twice = {
        name: sorted(decl & inherited(name)) for name, (_, decl) in classes.items() if decl & inherited(name)
    }
    assert twice == {}


def _called(node: ast.AST) -> list[str]:
    """The names of the functions and methods called in ``node``."""
    out = []
    for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
        func = call.func
        out.append(
            func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else "?"
        )
    return out


def test_no_slice_bound_in_a_compiled_module_calls_what_may_have_an_effect() -> None:
    found = []
    for name, tree in _compiled_trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
                calls = _called(node.slice)
                if set(calls) - PURE_CALLS:
                    found.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert found == []
