"""What each config key means, read from the dataclasses and the YAML presets: a field's type,
default and the comment beside it in the source; a preset's opening comment; the default
option of each group. Shared by ``mbpo-arm <command> --help`` (:mod:`mbpo_arm.launch.help`)
and the docs' configuration reference (``docs/hooks/config_reference.py``).

Light: the standard library and PyYAML only (no torch, mujoco, numpy), so ``--help`` stays
instant.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import linecache
import re
import sys
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

import yaml

COMPUTED = "(computed)"  # default_text() of a default factory that cannot run on its own
REQUIRED = "required"  # default_text() of a field without a default


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One field of a config dataclass, as a user sees it."""

    name: str
    type: str  # as written in the source, e.g. ``str | None``
    default: str  # as written in YAML or on the command line (default_text)
    doc: str  # the comment beside the field in the source, as one line
    sub: type | None = None  # the dataclass it holds when it is a group of keys


def describe(cls: type) -> list[FieldDoc]:
    """The fields of the dataclass ``cls`` with their type, default and comment."""
    comments = field_comments(cls)
    hints = type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name, f.type)
        sub = dataclass_of(f, hint, cls)
        out.append(FieldDoc(f.name, type_name(f, hint), "" if sub else default_text(f),
                            comments.get(f.name, ""), sub))
    return out


def type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a name that does not resolve: fall back to each field's string type
        return {}


def dataclass_of(f: dataclasses.Field, hint: Any, owner: type) -> type | None:
    """The dataclass a field holds (``X``, ``X | None``, ``Optional[X]``), else None."""
    if dataclasses.is_dataclass(f.default_factory) and isinstance(f.default_factory, type):
        return f.default_factory
    if isinstance(hint, str):  # unresolved: look the names up in the owner's module
        scope = vars(sys.modules.get(owner.__module__, object()))
        names = [n.strip() for n in re.split(r"[|\[\],]", hint.replace("Optional", ""))]
        found = [scope[n] for n in names if n in scope and dataclasses.is_dataclass(scope[n])]
        return found[0] if len(found) == 1 else None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


def type_name(f: dataclasses.Field, hint: Any) -> str:
    if isinstance(f.type, str):  # as written in the source (from __future__ import annotations)
        return f.type
    if isinstance(hint, type):
        return hint.__name__
    return re.sub(r"\btyping\.", "", repr(hint))


def default_text(f: dataclasses.Field) -> str:
    """A field's default as written in YAML, or :data:`COMPUTED` / :data:`REQUIRED`."""
    if f.default is not dataclasses.MISSING:
        return yaml_value(f.default)
    if f.default_factory is not dataclasses.MISSING:
        try:
            return yaml_value(f.default_factory())
        except Exception:
            return COMPUTED
    return REQUIRED


def yaml_value(value: Any) -> str:
    """A value as it would be written in YAML or on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return value if value else '""'
    return repr(value)


def first_line(doc: str | None, cls: type | None = None) -> str:
    """The first paragraph of a docstring, as one line ("" for dataclass's generated one)."""
    if not doc or (cls is not None and doc.startswith(f"{cls.__name__}(")):
        return ""
    return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ")


def first_sentence(text: str) -> str:
    """``text`` up to its first full stop (not the one of "e.g." or "et al.")."""
    first = re.split(r"(?<!\bal)(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z(])", text, maxsplit=1)[0]
    return first.rstrip(".") + "." if first else ""


# ------------------------------------------------------------------------------ comments
def class_source(cls: type) -> str:
    """The source of a top-level class, found by its ``class`` line (``inspect.getsource``
    parses the whole module to find it, ten times slower: ``--help`` reads ~20 classes)."""
    try:
        lines = linecache.getlines(inspect.getsourcefile(cls) or "")
    except TypeError:
        lines = []
    start = next((i for i, line in enumerate(lines)
                  if re.match(rf"class {cls.__name__}\b", line)), None)
    if start is None or cls.__qualname__ != cls.__name__:
        return inspect.getsource(cls)
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    while end > start + 1 and lines[end - 1].strip()[:1] in ("", "#"):  # what follows it
        end -= 1
    return "".join(lines[start:end])


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """The comment of each field in the class source, joined into one line.

    A field's comment is the one after it on its line (``name: type = default  # comment``),
    continued by the comment lines right below it when they are indented (``#   more``) or
    when the next field has a comment of its own. A field with no comment on its line takes
    the comment block right above it.
    """
    try:
        source = textwrap.dedent(class_source(cls))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return {}
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    if node is None:
        return {}
    lines = source.splitlines()
    inline: dict[int, str] = {}  # line -> comment after code
    own: dict[int, str] = {}  # line -> a line that is only a comment
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                row, col = tok.start
                target = own if not lines[row - 1][:col].strip() else inline
                target[row] = tok.string
    except (tokenize.TokenError, IndentationError):
        return {}
    spans = [(n.target.id, n.lineno, n.end_lineno or n.lineno) for n in node.body
             if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    result: dict[str, str] = {}
    used: set[int] = set()
    for i, (name, first, last) in enumerate(spans):
        trailing = [inline[r] for r in range(first, last + 1) if r in inline]
        text = [_strip(trailing[-1])] if trailing else []
        if not text:  # the block right above the field
            block, r = [], first - 1
            while r in own and r not in used:
                block.insert(0, r)
                r -= 1
            text = [_strip(own[r]) for r in block]
        else:  # continuation lines right below it
            below, r = [], last + 1
            while r in own:
                below.append(r)
                r += 1
            nxt = spans[i + 1] if i + 1 < len(spans) else None
            next_bare = nxt is not None and r == nxt[1] and not any(
                x in inline for x in range(nxt[1], nxt[2] + 1))
            if next_bare:  # only the indented lines continue; the rest leads the next field
                indented = 0
                while indented < len(below) and own[below[indented]].startswith("#  "):
                    indented += 1
                below = below[:indented]
            text += [_strip(own[x]) for x in below]
            used.update(below)
        joined = " ".join(t for t in text if t and not re.fullmatch(r"[-=#*~ ]+", t))
        result[name] = re.sub(r"\s+", " ", joined).strip()
    return result


def _strip(comment: str) -> str:
    return comment.lstrip("#").strip()


# ------------------------------------------------------------------------------ presets
def defaults_list(path: Path) -> dict[str, str]:
    """``{group: default option}`` from the ``defaults:`` list of a YAML file such as
    ``configs/train.yaml`` (``"null"`` for a group that is off by default)."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    out = {}
    for item in data.get("defaults", []) or []:
        if isinstance(item, dict):
            for k, v in item.items():
                out[str(k)] = "null" if v is None else str(v)
    return out


def yaml_description(path: Path) -> str:
    """The first sentence of the comment block that opens a YAML file."""
    block = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text.startswith("@package"):
            block.append(text)
    return first_sentence(" ".join(block))


def group_options(config_dir: Path, schema_options: dict[str, dict[str, type]],
                  group: str) -> list[tuple[str, str]]:
    """``[(option, description)]`` of a config group: its YAML presets (their opening
    comment) and the schema options registered for it (the schema's docstring when the
    group has several, e.g. the backends; "" when the schema is the group's own)."""
    schemas = schema_options.get(group, {})
    out = {p.stem: yaml_description(p) for p in (config_dir / group).glob("*.yaml")}
    for name, cls in schemas.items():
        if name not in out:
            out[name] = first_line(cls.__doc__, cls) if len(schemas) > 1 else ""
    return sorted(out.items())
