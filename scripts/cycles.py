#!/usr/bin/env python3
"""Finds import cycles between the modules of each crate: a module is a file
(or a directory's mod.rs), and it imports another when it names it through
`crate::` (in a `use` or a path) or `super::` from a child. Prints every
cycle and exits 1 if there is one. Submodules count as their top module, so
`policy::rules` importing `policy` is not a cycle but `decide` -> `policy` ->
`decide` is."""
import os
import re
import sys

CRATES = ["supervisor/src", "proxy/src"]


def top_module(rel):
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts[0] if parts else None


def edges(root):
    graph = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)
            me = top_module(rel)
            if me is None:
                continue
            text = open(path, encoding="utf-8").read()
            # Test modules may reach anywhere; they are not the architecture.
            text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
            # Doc links name modules without depending on them.
            text = re.sub(r"//.*", "", text)
            named = set(re.findall(r"crate::(\w+)", text))
            for group in re.findall(r"crate::\{([^}]*)\}", text):
                named.update(re.findall(r"(?:^|,)\s*(\w+)", group))
            graph.setdefault(me, set()).update(n for n in named if n != me)
    mods = set(graph)
    return {m: {n for n in ns if n in mods} for m, ns in graph.items()}


def cycles(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
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

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    found = False
    for crate in CRATES:
        for comp in cycles(edges(os.path.join(root, crate))):
            found = True
            print(f"{crate}: import cycle among {', '.join(comp)}")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
