#!/usr/bin/env python3
"""Checks the gateway's module layering (gateway/src/lib.rs, "# Layout").

1. No import cycle between files: every `use crate::…`, `use super::…`, `use self::…` and
   inline `crate::…` path becomes an edge from the file that writes it to the file that
   defines the module it names (re-exports count: a `pub use` in a mod.rs is an edge too).
   Any strongly connected component of more than one file is a cycle.
2. Each top-level module imports only the modules below it (ALLOWED), and no `out/<x>`
   imports another `out/<y>`.

Prints what it finds and exits 1 on any violation. Run: python3 scripts/check_layers.py
"""

import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gateway", "src")

# What each top-level module may import (besides itself). `app` sees everything.
ALLOWED = {
    "core": set(),
    "config": set(),
    "metrics": {"core"},
    "auth": {"core", "config"},
    "state": {"core", "config"},
    "source": {"core", "config"},
    "stream": {"core", "config", "metrics", "source", "state"},
    "pipeline": {"core", "stream"},
    "detect": {"core", "config", "pipeline", "state", "stream"},
    "archive": {"core", "config", "pipeline"},
    "jobs": {"core", "config", "metrics", "source", "pipeline"},
    "record": {"core", "config", "metrics", "stream", "pipeline", "archive"},
    "out": {"core", "config", "metrics", "pipeline", "state", "stream"},
    "http": {"core", "config", "metrics", "auth", "state", "stream", "pipeline", "detect", "out", "archive", "record", "jobs"},
    "restream": {"core", "config", "auth", "stream"},
    "doctor": {"core", "config", "state", "archive", "source", "jobs"},
    "app": None,
}


def module_of(path):
    """gateway/src/a/b.rs -> ("a", "b"); a/mod.rs -> ("a",); lib.rs -> ()."""
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] if not line.lstrip().startswith("//") else "" for line in text.splitlines())


def expand_use(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e] (no whitespace in `tree`)."""
    m = re.match(r"^(.*?)\{(.*)\}$", tree)
    if not m:
        return [tree]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        if p:
            out.extend(expand_use(prefix + p))
    return out


def main():
    files = {}
    for dirpath, _, names in os.walk(ROOT):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(dirpath, n)
                # main.rs is the binary; `tests.rs`/`test_util.rs` are `#[cfg(test)]` modules,
                # which may reach anywhere (test helpers, the assembled gateway).
                if os.path.relpath(p, ROOT) != "main.rs" and n not in ("tests.rs", "test_util.rs"):
                    files[module_of(p)] = p
    modules = set(files)

    def resolve(path):
        """The deepest module a path (tuple of segments from the crate root) names."""
        best = ()
        for i in range(1, len(path) + 1):
            if tuple(path[:i]) in modules:
                best = tuple(path[:i])
        return best

    edges = {m: set() for m in modules}
    for mod, path in files.items():
        text = strip_comments(open(path).read())
        # Test modules may reach anywhere (helpers from other modules' tests).
        text = re.split(r"#\[cfg\(test\)\]\s*(?:pub(?:\(crate\))?\s+)?mod tests", text)[0]
        refs = []
        for m in re.finditer(r"\buse\s+([^;]+);", text):
            for tree in expand_use(re.sub(r"\s+", "", m.group(1))):
                first = tree.split("::")[0]
                refs.append(tree if first in ("crate", "super", "self") else "self::" + tree)
        refs.extend(m.group(0) for m in re.finditer(r"\bcrate(?:::\w+)+", text))
        refs.extend(m.group(0) for m in re.finditer(r"\bsuper(?:::\w+)+", text))
        # Paths through a child module declared here (`connection::serve`, `use hub::Hub`).
        children = {c[-1] for c in modules if len(c) == len(mod) + 1 and c[: len(mod)] == mod}
        for child in children:
            refs.extend("self::" + m.group(0) for m in re.finditer(rf"(?<![:\w]){child}(?:::\w+)+", text))
        for ref in refs:
            segs = ref.split(" as ")[0].split("::")
            if segs[0] == "crate":
                target = resolve(segs[1:])
            elif segs[0] == "super":
                base = list(mod)
                while segs and segs[0] == "super":
                    base = base[:-1]
                    segs = segs[1:]
                target = resolve(base + segs)
            elif segs[0] == "self":
                target = resolve(list(mod) + segs[1:])
            else:
                continue
            if target != mod:
                edges[mod].add(target)

    failures = []
    # Tarjan's strongly connected components.
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
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
            sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    name = lambda m: "::".join(m) or "lib"
    for comp in sccs:
        if len(comp) > 1:
            failures.append("import cycle: " + " <-> ".join(sorted(name(m) for m in comp)))

    for mod, targets in sorted(edges.items()):
        if not mod:
            continue
        top = mod[0]
        allowed = ALLOWED.get(top, set())
        for t in sorted(targets):
            if not t or t[0] == top and not (top == "out" and len(t) > 1 and len(mod) > 1 and t[1] != mod[1]):
                continue
            if top == "out" and t[0] == "out":
                failures.append(f"{name(mod)} imports {name(t)}: no out module imports another")
            elif allowed is not None and t[0] not in allowed:
                failures.append(f"{name(mod)} imports {name(t)}: {top} may import only {sorted(allowed) or 'nothing of the crate'}")

    if os.environ.get("CHECK_LAYERS_EDGES"):
        for mod, targets in sorted(edges.items()):
            print(name(mod), "->", ", ".join(sorted(name(t) for t in targets)))
    count = sum(len(t) for t in edges.values())
    if failures:
        print("\n".join(failures))
        print(f"check_layers: {len(failures)} problem(s) in {len(modules)} files, {count} imports")
        return 1
    print(f"check_layers: {len(modules)} files, {count} imports, no cycle, layers respected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
