"""The house: the package's imports, parsed from its source, keep to the floors of the plan (README "Layout").

A room is a top-level module or sub-package of ``synboost``. A room may import rooms of its own floor or below,
never above; rooms import each other without circles; the package root holds only the face and the leaves.
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "synboost"

#: floor -> rooms, lowest first (the README's "Layout" table)
FLOORS: list[tuple[str, set[str]]] = [
    ("leaves", {"errors", "runtime", "data", "metrics", "hub", "config", "scores", "viz", "tensors"}),
    ("blocks", {"models", "losses"}),
    ("detectors", {"detectors"}),
    ("jobs", {"training", "jobs", "bench", "importers"}),
    ("face", {"cli"}),
]
FLOOR_OF = {room: i for i, (_, rooms) in enumerate(FLOORS) for room in rooms}
ROOT_MODULES = {"__init__.py", "errors.py", "runtime.py", "scores.py", "viz.py", "tensors.py", "cli.py"}


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "synboost" and len(parts) > 1 else None


def imports() -> dict[str, set[tuple[str, str]]]:
    """room -> {(imported room, where)} for every import statement of the package, lazy ones included."""
    found: dict[str, set[tuple[str, str]]] = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG)
        if rel.parts == ("__init__.py",):
            continue  # the front door re-exports lazily by name, it imports nothing at import time
        room = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names] if node.module == "synboost" \
                    else [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                r = room_of(n)
                if r and r != room and r in FLOOR_OF:
                    found.setdefault(room, set()).add((r, f"{rel}:{node.lineno}"))
    return found


def test_every_room_is_on_a_floor():
    rooms = {p.name.removesuffix(".py") for p in PKG.iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert rooms <= set(FLOOR_OF), f"rooms on no floor of the plan: {sorted(rooms - set(FLOOR_OF))}"


def test_the_package_root_holds_only_the_face_and_the_leaves():
    loose = {p.name for p in PKG.glob("*.py")} - ROOT_MODULES
    assert not loose, f"modules loose in the package root: {sorted(loose)} (give each a wing)"
    for p in PKG.glob("*.py"):
        room = p.name.removesuffix(".py")
        if room != "__init__":
            assert FLOOR_OF[room] in (0, len(FLOORS) - 1), f"{p.name} is neither a leaf nor the face"


def test_no_import_runs_up_the_floors():
    upward = [f"{where}: {room} ({FLOORS[FLOOR_OF[room]][0]}) imports {target} ({FLOORS[FLOOR_OF[target]][0]})"
              for room, targets in imports().items() for target, where in sorted(targets)
              if FLOOR_OF[target] > FLOOR_OF[room]]
    assert not upward, "imports running up:\n" + "\n".join(upward)


def test_no_circles_between_rooms():
    graph = {room: {t for t, _ in targets} for room, targets in imports().items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(r: str) -> list[str] | None:
        state[r] = 1
        path.append(r)
        for t in sorted(graph.get(r, ())):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        state[r] = 2
        path.pop()
        return None

    for room in sorted(graph):
        if room not in state:
            cycle = visit(room)
            assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_data_and_metrics_stay_numpy_only():
    for room in ("data", "metrics"):
        for f in (PKG / room).rglob("*.py"):
            tree = ast.parse(f.read_text())
            mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            assert not {m for m in mods if m.split(".")[0] == "torch"}, f"{f} imports torch"


def test_the_front_door_is_lazy_and_complete():
    import subprocess
    import sys

    code = ("import sys, synboost; assert 'torch' not in sys.modules, 'import synboost imported torch'; "
            "names = ['load_pipeline', 'evaluate', 'create_model', 'list_models', 'open_dataset', 'save_component', "
            "'load_component']; assert all(callable(getattr(synboost, n)) for n in names); "
            "assert set(names) <= set(dir(synboost))")
    subprocess.run([sys.executable, "-c", code], check=True)
