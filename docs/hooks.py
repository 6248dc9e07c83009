"""MkDocs hook: the Home page from README.md and the API reference pages from the nav.

A nav entry ``reference/<dotted.module>.md`` with no file under ``docs/`` becomes a generated
page: ``::: module`` for a module; for a package (or a module that re-exports names), its
docstring, a table of the names in its ``__all__`` (each linked to where it is defined),
what it defines itself, then every submodule, recursively. So a new reference page is one
nav line (``- flowinfer.npe: reference/flowinfer.npe.md``), and a new
module inside a documented package appears with no change at all. ``reference/index.md``
lists every name of ``flowinfer.__all__`` the same way.

Warnings (errors under ``mkdocs build --strict``): a module of the package that no reference
page documents, unless private (``_name``) or a deprecated shim (docstring starting
"Deprecated path"); a name in a package's ``__all__`` without a docstring; and, through
mkdocs-autorefs, one whose entry does not render (left out by its module's ``__all__``).
"""

from __future__ import annotations

import ast
import functools
import logging
import re
from pathlib import Path

import griffe
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.plugins.flowinfer_reference")

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def _tree():
    """The package as griffe reads it from this checkout (no import: an editable install of
    another checkout would win over ``sys.path``)."""
    return griffe.load(PACKAGE, search_paths=[str(ROOT)])
PACKAGE = "flowinfer"
PREFIX = "reference/"


def _nav_paths(nav) -> list[str]:
    """Every page path named in the nav, in order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [path for item in nav for path in _nav_paths(item)]
    if isinstance(nav, dict):
        return [path for value in nav.values() for path in _nav_paths(value)]
    return []


def _source(module: str) -> Path:
    """The file of a dotted module name (a package's ``__init__.py``)."""
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _documented(module: str) -> bool:
    """Public and not a deprecated shim: the modules the reference must show."""
    if any(part.startswith("_") for part in module.split(".")):
        return False
    docstring = ast.get_docstring(ast.parse(_source(module).read_text())) or ""
    return not docstring.startswith("Deprecated path")


def _submodules(package: str) -> list[str]:
    """The documented modules directly inside a package, subpackages after modules."""
    folder = ROOT.joinpath(*package.split("."))
    modules = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    packages = sorted(p.name for p in folder.iterdir() if (p / "__init__.py").is_file())
    return [name for name in (f"{package}.{n}" for n in modules + packages) if _documented(name)]


def _exports(module: str) -> list[tuple[str, object]]:
    """``(name, griffe object)`` for each name of a module's ``__all__``, read statically."""
    mod = _tree().modules_collection[module]
    found = []
    for item in mod.exports or ():
        if isinstance(item, str):
            found.append((item, mod[item]))
        else:  # the top level's ``*_LAZY``: {name: module that defines or re-exports it}
            lazy = ast.literal_eval(str(mod[item.name].value))
            found += [(name, _tree().modules_collection[f"{path}.{name}"])
                      for name, path in lazy.items()]
    return found


def _exports_table(module: str) -> str:
    """A table of a module's ``__all__``, each name linked to the entry where it is defined."""
    rows = []
    for name, obj in _exports(module):
        target = obj.final_target if obj.is_alias else obj
        if any(part.startswith("_") for part in target.path.split(".")):
            continue  # e.g. __version__, defined in the private _version module
        docstring = target.docstring.value if target.docstring else ""
        if not docstring and (target.is_function or target.is_class):
            log.warning("%s.%s (in __all__) has no docstring", module, name)
        summary = docstring.split("\n\n")[0].replace("\n", " ")
        summary = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", summary)
        summary = re.sub(r"``([^`]+)``", r"`\1`", summary)
        # A pipe ends a table cell unless it is escaped or inside inline code.
        summary = "`".join(part if i % 2 else part.replace("|", "\\|")
                           for i, part in enumerate(summary.split("`")))
        rows.append(f"| [`{name}`][{target.path}] | `{target.path}` | {summary} |")
    if not rows:
        return ""
    return "| name | defined in | summary |\n|---|---|---|\n" + "\n".join(rows) + "\n\n"


def _page(module: str, level: int = 1) -> tuple[str, list[str]]:
    """A page (or a section at heading ``level``) documenting a module; the modules covered.

    A package, or a module that re-exports names (an old import path), shows its docstring,
    a table linking its ``__all__`` to where each name is defined, and renders only what it
    defines itself, so no entry appears twice; a package then shows its submodules.
    """
    package = _source(module).name == "__init__.py"
    mod = _tree().modules_collection[module]
    if not package and not any(obj.is_alias for _, obj in _exports(module)):
        if level == 1:  # the page title names the module; its members are the sections
            text = f"# `{module}`\n\n::: {module}\n    options:\n      show_root_heading: false\n"
            return text, [module]
        return f"::: {module}\n    options:\n      heading_level: {level}\n", [module]
    own = [name for name, obj in mod.members.items()
           if not obj.is_alias and not obj.is_module and obj.is_public]
    parts = [
        f"{'#' * level} `{module}`\n",
        f"::: {module}\n    options:\n      members: false\n      show_root_heading: false\n",
        _exports_table(module),
        *(f"::: {module}.{name}\n    options:\n      heading_level: {level + 1}\n"
          f"      show_root_full_path: false\n" for name in own),
    ]
    covered = [module]
    for sub in _submodules(module) if package else ():
        text, more = _page(sub, level + 1)
        parts.append(text)
        covered += more
    return "\n".join(parts), covered


def _all_modules(package: str) -> list[str]:
    found = [package]
    for sub in _submodules(package):
        found += _all_modules(sub) if _source(sub).name == "__init__.py" else [sub]
    return found


def on_files(files, config):
    _tree.cache_clear()  # `mkdocs serve` rebuilds after edits
    readme = (ROOT / "README.md").read_text()
    # README links point into docs/ from the repository root; the site's root is docs/.
    readme = re.sub(r"\]\(docs/", "](", readme)
    files.append(File.generated(config, "index.md", content=readme))

    covered = set()
    for path in _nav_paths(config["nav"]):
        if not path.startswith(PREFIX) or files.get_file_from_path(path) is not None:
            continue
        module = path[len(PREFIX):-len(".md")]
        if module == "index":
            text = (f"# Reference\n\n::: {PACKAGE}\n    options:\n      members: false\n"
                    f"      show_root_heading: false\n\nThe names of `import {PACKAGE} as fi`, "
                    f"each linked to its entry; the pages in the navigation follow the "
                    f"package's layers.\n\n" + _exports_table(PACKAGE))
            covered.add(PACKAGE)
        elif not _source(module).is_file():
            log.warning("nav entry %s: no module %s", path, module)
            continue
        else:
            text, modules = _page(module)
            covered.update(modules)
        files.append(File.generated(config, path, content=text))

    for module in _all_modules(PACKAGE):
        if module not in covered:
            log.warning("module %s is on no reference page: add a nav entry %s%s.md (or to "
                        "its package's page)", module, PREFIX, module)
    return files
