#!/usr/bin/env python3
"""Checks the shape of the source tree that issue 13 set (docs/architecture.md):

1. No package cycle among production targets: `bazel query --output=graph` of every library
   and binary that is not testonly (tests and test helpers are left out: a format's tests may
   save through the engine to get a checkpoint to read).
2. No source file under core/ longer than LIMIT lines (one unit per file).

usage: scripts/check_layers.py   (from the repository root; runs `bazel query` itself)
Exits 1 naming every cycle (with the edges that close it) and every oversized file.
"""
import collections
import pathlib
import re
import subprocess
import sys

LIMIT = 500


def is_test(label):
    return label.endswith("_test") or "/testing" in label or label.startswith("//tests") or label.startswith("//fuzz")


def package_cycles(graph_text):
    edges = collections.defaultdict(set)
    for line in graph_text.splitlines():
        m = re.match(r'\s*"(//[^"]+)"\s*->\s*"(//[^"]+)"', line)
        if not m:
            continue
        a, b = m.groups()
        if is_test(a) or is_test(b):
            continue
        pa, pb = a.split(":")[0], b.split(":")[0]
        if pa != pb and not pb.startswith("//third_party"):
            edges[pa].add((pb, a, b))
    nodes = set(edges) | {e[0] for es in edges.values() for e in es}
    adj = {p: sorted({e[0] for e in edges.get(p, ())}) for p in nodes}
    # Tarjan's strongly connected components, iteratively.
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter[0]
                counter[0] += 1
                stack.append(v)
                on.add(v)
            if i < len(adj[v]):
                work.append((v, i + 1))
                w = adj[v][i]
                if w not in index:
                    work.append((w, 0))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return [(c, sorted((a, b) for p in c for (pb, a, b) in edges[p] if pb in c)) for c in out]


def main():
    problems = []
    graph = subprocess.run(
        ["bazel", "query", 'kind(".*_(library|binary)", //...) except attr(testonly, 1, //...)', "--output=graph", "--nograph:factored", "--noimplicit_deps"],
        check=True, capture_output=True, text=True).stdout
    for comp, links in package_cycles(graph):
        problems.append("package cycle: " + " <-> ".join(comp))
        problems += [f"    {a} -> {b}" for a, b in links]
    for path in sorted(pathlib.Path("core").rglob("*")):
        if path.suffix in (".h", ".cc") and path.is_file():
            n = sum(1 for _ in path.open(errors="replace"))
            if n > LIMIT:
                problems.append(f"{path}: {n} lines (more than {LIMIT}; split it into units)")
    for p in problems:
        print(p)
    print(f"check_layers: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
