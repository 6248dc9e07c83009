"""Griffe extension: read flowinfer's docstring conventions as mkdocstrings expects them.

The docstrings are Google style with three habits griffe's parser does not know; rather than
rewrite them, the text griffe parses is adjusted (the source is untouched):

* ``Example:`` (the style guide's section name) is read as ``Examples:``, so the doctest is
  rendered as code; griffe knows only the plural and would render ``>>>`` as Markdown quotes.
* ``a, b: text`` in ``Args:`` documents each name with that text.
* Sphinx roles (``:func:`~flowinfer.io.save```) become links when the name is documented on
  the site (through an alias, to where it is defined) and inline code otherwise.
"""

from __future__ import annotations

import re

from griffe import Extension

_EXAMPLE = re.compile(r"^Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|obj|data|exc|const):`([^`]+)`")
_SECTION = re.compile(r"^[A-Z][\w ]*:\s*$")
_ARGS = ("Args:", "Arguments:", "Parameters:", "Params:")
_GROUP = re.compile(r"^(\s+)(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)+)(\s*(?:\([^)]*\))?:\s.*)$")


def _split_grouped_args(text: str) -> str:
    """``a, b: text`` (plus its continuation lines) repeated once per name, in Args only."""
    lines = text.split("\n")
    out: list[str] = []
    in_args = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith((" ", "\t")) and line.strip():
            in_args = line.strip() in _ARGS
        match = _GROUP.match(line) if in_args else None
        if match is None:
            out.append(line)
            i += 1
            continue
        indent, names, rest = match.groups()
        block = [rest]
        i += 1
        while i < len(lines) and lines[i].strip() and \
                len(lines[i]) - len(lines[i].lstrip()) > len(indent):
            block.append(lines[i])
            i += 1
        for name in (n.strip() for n in names.split(",")):
            out.append(indent + name + block[0])
            out.extend(block[1:])
    return "\n".join(out)


class FlowinferDocstrings(Extension):
    """Adjust each docstring of the loaded package once the object tree is complete."""

    def on_object(self, *, obj, loader, **kwargs) -> None:
        _adjust(obj, loader)

    def on_package(self, *, pkg, loader, **kwargs) -> None:
        _adjust(pkg, loader)  # on_object does not visit the top-level package itself


def _adjust(obj, loader) -> None:
    """Rewrite one object's docstring text (idempotent: a second call changes nothing)."""
    if obj.is_alias or obj.docstring is None:
        return
    text = _EXAMPLE.sub("Examples:", obj.docstring.value)
    text = _split_grouped_args(text)
    obj.docstring.value = _ROLE.sub(lambda m: _role(m.group(1), obj, loader), text)


def _role(name: str, obj, loader) -> str:
    shown = name.lstrip("~")
    short = shown.rsplit(".", 1)[-1] if name.startswith("~") else shown
    path = shown.removesuffix("()")
    target = _canonical(path, loader)
    if target is None and not path.startswith("flowinfer."):  # relative: look it up in scope
        head, _, tail = path.partition(".")
        try:
            resolved = obj.resolve(head)
        except Exception:  # griffe raises NameResolutionError for names not in scope
            resolved = None
        if resolved is not None:
            target = _canonical(f"{resolved}.{tail}" if tail else resolved, loader)
    if target is None:
        return f"`{short}`"
    # `optional`: an identifier that no page renders (private, or a shim) stays plain code.
    return f'<autoref identifier="{target}" optional><code>{short}</code></autoref>'


def _canonical(path: str, loader) -> str | None:
    try:
        found = loader.modules_collection[path]
        return found.canonical_path
    except Exception:  # not loaded, not found, or an alias whose target is outside the package
        return None
