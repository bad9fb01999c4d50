"""The biggest modules and functions of gccs_core/ and app/, in lines (for docs/architecture.md).

    python scripts/code_size.py [--root DIR] [--rev REV] [--top 12]

With ``--rev`` the files are read from that git revision (``git show REV:path``), so a before/after comparison
needs no second checkout. A function's size is its ``def`` line to its last line (decorators and docstring
included); a module's size is its line count.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from pathlib import Path

PACKAGES = ("gccs_core", "app")


def _files(root: Path, rev: str | None) -> dict[str, str]:
    """``{relative path: source}`` of every .py file under the packages, at ``rev`` or in the work tree."""
    if rev is None:
        return {str(p.relative_to(root)): p.read_text() for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "--", *PACKAGES], cwd=root, check=True,
                           capture_output=True, text=True).stdout.split()
    return {n: subprocess.run(["git", "show", f"{rev}:{n}"], cwd=root, check=True, capture_output=True,
                              text=True).stdout for n in names if n.endswith(".py")}


def sizes(sources: dict[str, str]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(modules, functions) as (lines, name), biggest first."""
    modules = sorted(((len(src.splitlines()), path) for path, src in sources.items()), reverse=True)
    functions = []
    for path, src in sources.items():
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                functions.append((node.end_lineno - first + 1, f"{path}::{node.name}"))
    return modules, sorted(functions, reverse=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    p.add_argument("--rev", default=None, help="a git revision instead of the work tree")
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args(argv)
    sources = _files(Path(args.root), args.rev)
    modules, functions = sizes(sources)
    total = sum(n for n, _ in modules)
    print(f"{len(modules)} modules, {total} lines, {len(functions)} functions; "
          f"functions over 60 lines: {sum(n > 60 for n, _ in functions)}")
    print("| module | lines |\n|---|---:|")
    for n, name in modules[:args.top]:
        print(f"| {name} | {n} |")
    print("\n| function | lines |\n|---|---:|")
    for n, name in functions[:args.top]:
        print(f"| {name} | {n} |")


if __name__ == "__main__":
    main()
