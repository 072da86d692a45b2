#!/usr/bin/env python3
"""The workspace's import graph, file by file, and the rules it must keep.

Reads every crate of the workspace (its `mod` tree from src/lib.rs or src/main.rs), turns
each `use crate::…`, `use super::…` and inline `crate::…` path into an edge from the file
that writes it to the file that defines what it names (following `pub use` re-exports, so
`use crate::Router` is an edge to router.rs, not to lib.rs), and checks:

* no file loops: no two files of a crate import each other, directly or around a cycle;
* the layering rules below: the relay's frame path imports nothing above it, and the
  router sees a VES only through its inbox;
* the crate graph: no crate depends on a crate above it (Cargo forbids cycles; this
  keeps the documented direction).

Usage: scripts/import_graph.py            check; exit 1 with the findings
       scripts/import_graph.py --edges    also print every file edge ("a -> b")
       scripts/import_graph.py --dot      the graph in Graphviz format, crates as clusters
Standard library only: CI runs it from scripts/test.sh.
"""

from __future__ import annotations

import os
import re
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Files each file on the frame path may import within its crate: nothing above it.
FRAME_PATH_RULES = {
    # The per-session usage counters: a leaf, like the metrics.
    "actors/src/usage.rs": set(),
    # The certificate-renewal hook (a trait the gateway implements): a leaf.
    "actors/src/certificates.rs": set(),
    # Fetches in flight (slots on the VES's node, waiters on the asking node): a leaf.
    "actors/src/ves/fetches.rs": set(),
    # Which worker a VES's sessions live on: a leaf.
    "actors/src/home.rs": set(),
    # The sessions' bounded queues: a leaf.
    "actors/src/queue.rs": set(),
    "actors/src/ves/inbox.rs": {
        "actors/src/home.rs",
        "actors/src/metrics.rs",
        "actors/src/queue.rs",
        "actors/src/ves/fetches.rs",
    },
    "actors/src/ves/command_stream.rs": {
        "actors/src/metrics.rs",
        "actors/src/usage.rs",
        "actors/src/ves/inbox.rs",
    },
    "actors/src/router.rs": {
        "actors/src/certificates.rs",
        "actors/src/close.rs",
        "actors/src/home.rs",
        "actors/src/metrics.rs",
        "actors/src/queue.rs",
        "actors/src/usage.rs",
        "actors/src/ves/fetches.rs",
        "actors/src/ves/inbox.rs",
    },
}

# Crate layers, lowest first; a crate may depend only on crates of lower layers.
CRATE_LAYERS = [
    {"noc-protocol", "noc-tls", "noc-crypto"},
    {"noc-storage", "noc-cluster", "noc-endpoint", "noc-ca"},
    {"noc-actors", "noc-device", "noc-agent", "noc-web"},
    {"noc-console"},
    {"noc-gateway", "noc-loadtest"},
    {"noc-app"},
    {"noc", "noc-test-support", "noc-fuzz"},
]


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return re.sub(r"//[^\n]*", "", text)


def expand_use_tree(tree: str) -> list[list[str]]:
    """`a::{b, c::{d as e}}` → [[a, b], [a, c, d]] (aliases dropped, globs kept as `*`)."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    out: list[list[str]] = []

    def walk(prefix: list[str], s: str) -> None:
        depth, start, parts = 0, 0, []
        for i, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(s[start:i])
                start = i + 1
        parts.append(s[start:])
        for part in filter(None, parts):
            brace = part.find("{")
            if brace >= 0:
                head = [p for p in part[:brace].split("::") if p]
                walk(prefix + head, part[brace + 1 : part.rindex("}")])
            else:
                out.append(prefix + [p for p in part.split("::") if p])

    walk([], tree)
    return out


class Crate:
    def __init__(self, name: str, directory: str, root: str):
        self.name = name
        self.dir = directory
        self.modules: dict[tuple[str, ...], str] = {}  # module path → file (relative to ROOT)
        self.file_module: dict[str, tuple[str, ...]] = {}
        self.reexports: dict[str, dict[str, list[str]]] = {}  # file → name → absolute path
        self.load(root, ())

    def load(self, path: str, modpath: tuple[str, ...]) -> None:
        rel = os.path.relpath(path, ROOT)
        self.modules[modpath] = rel
        self.file_module[rel] = modpath
        text = strip_comments(open(path, encoding="utf-8").read())
        base = os.path.dirname(path)
        if os.path.basename(path) not in ("lib.rs", "main.rs", "mod.rs"):
            base = os.path.join(base, os.path.basename(path)[:-3])
        for m in re.finditer(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, flags=re.M):
            name = m.group(1)
            for candidate in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
                if os.path.exists(candidate):
                    self.load(candidate, modpath + (name,))
                    break
        exports: dict[str, list[str]] = {}
        for m in re.finditer(r"^\s*pub(?:\([^)]*\))?\s+use\s+([^;]+);", text, flags=re.M):
            for p in expand_use_tree(m.group(1)):
                absolute = self.absolute(p, modpath, in_inline_module=False)
                if absolute is not None and p[-1] not in ("*", "self"):
                    exports[p[-1]] = absolute
        self.reexports[rel] = exports

    def absolute(self, path: list[str], modpath: tuple[str, ...], in_inline_module: bool) -> list[str] | None:
        """The path from the crate root, or None for another crate."""
        if not path:
            return None
        head = path[0]
        if head == "crate":
            return path[1:]
        if head == "super":
            base = list(modpath) if in_inline_module else list(modpath[:-1])
            rest = path[1:]
            while rest and rest[0] == "super":
                base = base[:-1]
                rest = rest[1:]
            return base + rest
        if head == "self":
            return list(modpath) + path[1:]
        # A bare first segment naming a child module (`use foo::Bar` inside a mod.rs).
        if tuple(modpath) + (head,) in self.modules:
            return list(modpath) + path
        return None

    def resolve(self, absolute: list[str], seen: int = 0) -> str | None:
        """The file defining what `absolute` names."""
        for n in range(len(absolute), -1, -1):
            prefix = tuple(absolute[:n])
            if prefix in self.modules:
                file = self.modules[prefix]
                rest = absolute[n:]
                if rest and seen < 8 and rest[0] in self.reexports.get(file, {}):
                    target = self.reexports[file][rest[0]] + rest[1:]
                    return self.resolve(target, seen + 1) or file
                return file
        return None

    def edges(self) -> set[tuple[str, str]]:
        out = set()
        for file, modpath in self.file_module.items():
            raw = strip_comments(open(os.path.join(ROOT, file), encoding="utf-8").read())
            # Paths written inside an inline `mod … {` (tests) are relative to that module.
            inline = [m.end() for m in re.finditer(r"^\s*(?:pub\s+)?mod\s+\w+\s*\{", raw, flags=re.M)]
            first_inline = min(inline) if inline else len(raw) + 1
            paths: list[tuple[list[str], bool]] = []
            for m in re.finditer(r"^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", raw, flags=re.M):
                if re.match(r"^\s*pub", m.group(0)) and file.endswith(("lib.rs", "mod.rs", "main.rs")):
                    continue  # a re-export is the module's face, not an import
                for p in expand_use_tree(m.group(1)):
                    paths.append((p, m.start() > first_inline))
            for m in re.finditer(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", raw):
                line_start = raw.rfind("\n", 0, m.start()) + 1
                if re.match(r"\s*(?:pub(?:\([^)]*\))?\s+)?use\b", raw[line_start:]):
                    continue
                paths.append((m.group(1).split("::"), m.start() > first_inline))
            for p, in_inline in paths:
                absolute = self.absolute(p, modpath, in_inline)
                if absolute is None:
                    continue
                target = self.resolve(absolute)
                if target and target != file:
                    out.add((file, target))
        return out


def workspace_crates() -> list[Crate]:
    members = re.search(r"members\s*=\s*\[(.*?)\]", open(os.path.join(ROOT, "Cargo.toml")).read(), flags=re.S)
    crates = []
    for member in re.findall(r'"([^"]+)"', members.group(1) if members else ""):
        manifest = open(os.path.join(ROOT, member, "Cargo.toml")).read()
        name = re.search(r'^name\s*=\s*"([^"]+)"', manifest, flags=re.M).group(1)
        for root in ("src/lib.rs", "src/main.rs"):
            path = os.path.join(ROOT, member, root)
            if os.path.exists(path):
                crates.append(Crate(name if root.endswith("lib.rs") else name + " (bin)", member, path))
    return crates


def crate_dependencies() -> dict[str, set[str]]:
    deps: dict[str, set[str]] = {}
    members = re.search(r"members\s*=\s*\[(.*?)\]", open(os.path.join(ROOT, "Cargo.toml")).read(), flags=re.S)
    for member in re.findall(r'"([^"]+)"', members.group(1) if members else ""):
        manifest = open(os.path.join(ROOT, member, "Cargo.toml")).read()
        name = re.search(r'^name\s*=\s*"([^"]+)"', manifest, flags=re.M).group(1)
        normal = manifest.split("[dev-dependencies]")[0]
        deps[name] = set(re.findall(r"^(noc(?:-[\w-]+)?)\s*(?:\.workspace|=)", normal, flags=re.M)) - {name}
    return deps


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    graph: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        graph[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in list(graph):
        if v not in index:
            strong(v)
    return found


def main() -> int:
    crates = workspace_crates()
    all_edges: set[tuple[str, str]] = set()
    problems: list[str] = []
    for crate in crates:
        edges = crate.edges()
        all_edges |= edges
        for loop in cycles(edges):
            chain = sorted((a, b) for a, b in edges if a in loop and b in loop)
            problems.append(f"{crate.name}: file loop among {', '.join(loop)}: " + "; ".join(f"{a} -> {b}" for a, b in chain))
    for file, allowed in FRAME_PATH_RULES.items():
        for a, b in sorted(all_edges):
            if a == file and b not in allowed:
                problems.append(f"{a} imports {b}: the frame path may import only {', '.join(sorted(allowed))}")
    layer_of = {name: i for i, layer in enumerate(CRATE_LAYERS) for name in layer}
    for name, deps in sorted(crate_dependencies().items()):
        if name not in layer_of:
            problems.append(f"crate {name} has no layer in scripts/import_graph.py")
            continue
        for dep in sorted(deps):
            if layer_of.get(dep, -1) >= layer_of[name]:
                problems.append(f"crate {name} depends on {dep}, which is not below it")
    if "--edges" in sys.argv:
        for a, b in sorted(all_edges):
            print(f"{a} -> {b}")
    if "--dot" in sys.argv:
        print("digraph imports {\n  rankdir=LR; node [shape=box, fontsize=10];")
        for crate in crates:
            label = crate.name.replace('"', "")
            print(f'  subgraph "cluster_{label}" {{ label="{label}";')
            for file in sorted(crate.file_module):
                print(f'    "{file}";')
            print("  }")
        for a, b in sorted(all_edges):
            print(f'  "{a}" -> "{b}";')
        print("}")
    for p in problems:
        print(p, file=sys.stderr)
    files = sum(len(c.file_module) for c in crates)
    print(f"import graph: {len(crates)} crate roots, {files} files, {len(all_edges)} edges, {len(problems)} problems",
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
