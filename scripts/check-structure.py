#!/usr/bin/env python3
"""check-structure.py: the limits the source tree keeps (docs/ARCHITECTURE.md).

    scripts/check-structure.py [--max-file N] [--max-func N] [--table] DIR...

Reads every .c file under the DIRs (not recursive into tests) and checks:
  - no file is longer than --max-file lines (default 1200);
  - no function is longer than --max-func lines (default 100), counted from the line with
    its name to its closing brace;
  - calls go one way: the graph "file A calls a function defined (not static) in file B"
    has no cycle, so no two files call each other, directly or around a circle.  A call
    through a function pointer is not an edge: that is how a lower layer reaches a higher
    one (a callback the higher one registers).
With --table it prints each file, its line count, its longest function and the files it
calls, lowest layer first.  Exit status 1 on any violation, each printed on one line.

The parser knows the project's style (GNU: the function's name at the start of a line,
its body from a '{' to a '}' alone at the start of a line); it is not a C compiler.
"""
import os
import re
import sys

DEF_RE = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*) ?\(')
CALL_RE = re.compile(r'\b([A-Za-z_][A-Za-z0-9_]*)\s*\(')
KEYWORDS = {'if', 'for', 'while', 'switch', 'return', 'sizeof', 'defined', 'alignof',
            '__attribute__', 'typeof', '__typeof__', '_Static_assert', 'offsetof'}


def strip(text):
    """Comments, strings and character constants blanked, line structure kept."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('/*', i):
            j = text.find('*/', i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r'[^\n]', ' ', text[i:j]))
            i = j
        elif text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            i = j
        elif c in '"\'':
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == '\\' else 1
            out.append(c + ' ' * max(0, j - i - 1) + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return ''.join(out)


def functions(path):
    """[(name, first_line, last_line, static)] of the function definitions in path."""
    lines = strip(open(path, encoding='utf-8', errors='replace').read()).split('\n')
    found = []
    i = 0
    while i < len(lines):
        m = DEF_RE.match(lines[i])
        if m and m.group(1) not in KEYWORDS:
            # a definition: the parameter list closes, then '{' alone at the start of a line
            j = i
            while j < len(lines) and not lines[j].rstrip().endswith(')') and ';' not in lines[j]:
                j += 1
            if j + 1 < len(lines) and lines[j].rstrip().endswith(')') and lines[j + 1].startswith('{'):
                k = j + 1
                while k < len(lines) and not lines[k].startswith('}'):
                    k += 1
                static = i > 0 and re.search(r'\bstatic\b', lines[i - 1]) is not None
                found.append((m.group(1), i + 1, k + 1, static))
                i = k + 1
                continue
        i += 1
    return found, lines


def scc(graph):
    """Tarjan's strongly connected components: those of more than one node are cycles."""
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
            comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def main(argv):
    max_file, max_func, table, dirs = 1200, 100, False, []
    it = iter(argv)
    for a in it:
        if a == '--max-file':
            max_file = int(next(it))
        elif a == '--max-func':
            max_func = int(next(it))
        elif a == '--table':
            table = True
        else:
            dirs.append(a)
    if not dirs:
        sys.exit(__doc__)
    files = sorted(os.path.join(d, f) for d in dirs for f in os.listdir(d) if f.endswith('.c'))
    if not files:
        sys.exit('check-structure: no .c files in %s' % ' '.join(dirs))
    defs, bodies, owner, bad = {}, {}, {}, []
    for f in files:
        fs, lines = functions(f)
        defs[f], bodies[f] = fs, lines
        for name, _, _, static in fs:
            if not static:
                owner.setdefault(name, f)
        n = len(open(f, encoding='utf-8', errors='replace').read().rstrip('\n').split('\n'))
        if n > max_file:
            bad.append('%s: %d lines (limit %d)' % (f, n, max_file))
        for name, a, b, _ in fs:
            if b - a + 1 > max_func:
                bad.append('%s:%d: %s is %d lines (limit %d)' % (f, a, name, b - a + 1, max_func))
    graph = {f: {} for f in files}
    for f in files:
        local = {name for name, _, _, _ in defs[f]}
        for lineno, line in enumerate(bodies[f], 1):
            for m in CALL_RE.finditer(line):
                name = m.group(1)
                g = owner.get(name)
                if g and g != f and name not in local and not DEF_RE.match(line):
                    graph[f].setdefault(g, (name, lineno))
    for comp in scc(graph):
        if len(comp) > 1:
            edges = ['%s -> %s (%s, line %d)' % (a, b, graph[a][b][0], graph[a][b][1])
                     for a in sorted(comp) for b in sorted(graph[a]) if b in comp]
            bad.append('calls go both ways between %s: %s' % (', '.join(sorted(comp)), '; '.join(edges)))
    if table:
        # lowest layer first: a file's depth is the longest chain of files it calls
        depth = {}

        def d(f, seen=()):
            if f in depth:
                return depth[f]
            if f in seen:
                return 0
            v = 1 + max([d(g, seen + (f,)) for g in graph[f]] or [-1])
            depth[f] = v
            return v
        for f in files:
            d(f)
        for f in sorted(files, key=lambda f: (depth[f], f)):
            n = len(open(f, encoding='utf-8', errors='replace').read().rstrip('\n').split('\n'))
            longest = max(((b - a + 1, name) for name, a, b, _ in defs[f]), default=(0, '-'))
            print('%-34s %5d lines  layer %d  longest %s (%d)  calls: %s' % (
                f, n, depth[f], longest[1], longest[0],
                ' '.join(sorted(os.path.basename(g) for g in graph[f])) or '-'))
    for b in bad:
        print('check-structure: ' + b)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
