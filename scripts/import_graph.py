"""The package graph of qc_stream, read from the imports of every module.

Prints one line per package with the packages it imports (module-level and function-local alike),
and exits 1 when the graph breaks one of the house rules:

- no cycle between packages;
- the worker's runtime (wire, domain, stream, inference, producers, storage, dapo, observability)
  never imports the synthetic generator (`qc_stream.synth`).

Usage: python scripts/import_graph.py [--mermaid] [--root qc_stream]
Run by .ci/run before the tests; docs/architecture.md shows its --mermaid output.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

RUNTIME = ("wire", "domain", "stream", "inference", "producers", "storage", "dapo", "observability")
FORBIDDEN_FOR_RUNTIME = "synth"


def package_of(module: str) -> str | None:
    """`qc_stream.stream.agents.inspect` -> `stream`; top-level modules are their own package."""
    parts = module.split(".")
    if parts[0] != "qc_stream" or len(parts) < 2:
        return None
    return parts[1]


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, current: str, is_package: bool) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = current.split(".")
                # A package's own __init__ counts as one level deeper than a module in it.
                drop = node.level - (1 if is_package else 0)
                base = base[: len(base) - drop] if drop else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def build_graph(root: Path) -> dict[str, dict[str, set[str]]]:
    """package -> imported package -> the modules that import it (for the error message)."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(root.rglob("*.py")):
        current = module_name(path, root)
        src = package_of(current)
        if src is None:
            continue
        graph[src]  # noqa: B018 - every package appears, even one that imports nothing
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target in imported_modules(tree, current, path.name == "__init__.py"):
            dst = package_of(target)
            if dst and dst != src and ((root / dst).is_dir() or (root / f"{dst}.py").exists()):
                graph[src][dst].add(current)
    return graph


def find_cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Every elementary cycle found by a depth-first search from each package (small graph)."""
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()

    def visit(start: str, node: str, path: list[str]) -> None:
        for nxt in graph.get(node, {}):
            if nxt == start:
                cycle = path[:]
                i = cycle.index(min(cycle))
                key = tuple(cycle[i:] + cycle[:i])
                if key not in seen:
                    seen.add(key)
                    cycles.append([*key, key[0]])
            elif nxt not in path and nxt > start:
                visit(start, nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, start, [start])
    return cycles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parents[1] / "qc_stream"
    )
    parser.add_argument("--mermaid", action="store_true", help="print a mermaid flowchart instead")
    args = parser.parse_args(argv)

    graph = build_graph(args.root)
    if args.mermaid:
        print("flowchart TD")
        for src in sorted(graph):
            for dst in sorted(graph[src]):
                print(f"  {src} --> {dst}")
    else:
        for src in sorted(graph):
            print(f"{src:14} -> {', '.join(sorted(graph[src])) or '(nothing)'}")

    problems: list[str] = []
    for cycle in find_cycles(graph):
        problems.append("package cycle: " + " -> ".join(cycle))
    for pkg in RUNTIME:
        modules = graph.get(pkg, {}).get(FORBIDDEN_FOR_RUNTIME)
        if modules:
            problems.append(
                f"runtime package {pkg!r} imports {FORBIDDEN_FOR_RUNTIME!r}: {', '.join(sorted(modules))}"
            )
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
