#!/usr/bin/env python3
"""Does the installed package import with only torch and numpy? Run with the Python of a venv that has the wheel.

Every module of the installed `neuralwiki` whose imports at module level (followed through neuralwiki's own modules)
need only the standard library, torch and numpy must import here, warning-free (run it with
`-W error::DeprecationWarning`), and pull in none of the extras. Prints which modules imported and which need more.
Exit 1 if one of them fails, pulls in an extra, or fewer than 5 modules were found.
"""
import ast, importlib, importlib.util, pathlib, sys

ALLOWED = set(sys.stdlib_module_names) | {'torch', 'numpy', '__future__'}
EXTRAS = {'matplotlib', 'ipywidgets', 'IPython', 'jupyter_core', 'fastcore', 'genanki', 'tqdm', 'sklearn', 'numba',
          'ipycanvas', 'anywidget'}


def top_imports(source, name):
    "Modules the module `name` with this `source` imports at module level (not inside functions or classes), as absolute names."
    out, todo = set(), list(ast.parse(source).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): continue
        if isinstance(node, ast.Import): out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            package = name.rpartition('.')[0]  # a relative import is relative to the module's package
            base = importlib.util.resolve_name('.' * node.level + (node.module or ''), package) if node.level else node.module
            out.add(base)
            if node.level and not node.module: out |= {f'{base}.{a.name}' for a in node.names}
        else: todo.extend(ast.iter_child_nodes(node))
    return out


def third_party(deps, m, seen=()):
    "Third-party packages the module `m` needs at import time, through neuralwiki's own modules (`deps`: module -> imports)."
    out = set()
    for d in deps[m]:
        if d in deps and d not in seen: out |= third_party(deps, d, seen + (m,))
        elif d.split('.')[0] not in ALLOWED | {'neuralwiki'}: out.add(d.split('.')[0])
    return out


def main():
    pkg = pathlib.Path(importlib.util.find_spec('neuralwiki').origin).parent
    mods = {f'neuralwiki.{p.stem}': p for p in sorted(pkg.glob('*.py')) if p.stem != '__init__'}
    deps = {m: top_imports(p.read_text(encoding='utf-8'), m) for m, p in mods.items()}
    plain = [m for m in mods if not third_party(deps, m)]
    others = {m: sorted(third_party(deps, m)) for m in mods if third_party(deps, m)}
    failed = []
    for m in plain:
        try: importlib.import_module(m)
        except Exception as e: failed.append(f'{m}: {type(e).__name__}: {e}')
    heavy = sorted(EXTRAS & set(sys.modules))
    print(f"imports with only torch and numpy ({len(plain)} of {len(mods)} modules): {', '.join(m.split('.')[1] for m in plain)}")
    if others: print('need more at import time: ' + '; '.join(f"{m.split('.')[1]} ({', '.join(v)})" for m, v in others.items()))
    if failed: sys.exit('these modules need only torch and numpy, but failed to import:\n  ' + '\n  '.join(failed))
    if heavy: sys.exit(f'importing them pulled in {heavy}')
    if len(plain) < 5: sys.exit(f'only {len(plain)} modules found to import: is the package complete?')


if __name__ == '__main__': main()
