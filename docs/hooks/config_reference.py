"""MkDocs hook: the configuration reference, generated from the typed dataclasses.

``docs/reference/configuration.md`` holds the placeholder line ``<!-- config-reference -->``;
at build time it is replaced by tables generated from :mod:`mbpo_arm.configs.schema`:
``RunConfig`` and every dataclass reachable from it through ``dataclasses.fields()`` (the
polymorphic ``backend`` through ``BACKEND_SCHEMAS``, optional groups through their type hints),
each field with its dotted key, type, default and the comment beside it in the source. The
options of each config group come from the YAML presets under ``configs/<group>/`` and the
schema options registered by the schema module. ``docs/hardware/ros2.md`` holds
``<!-- launch-arguments -->``, replaced by the arguments of ``launch/train_arm.py``.

No module path below the schema is written here: the dataclasses are found by walking the
tree, wherever they live. If the schema cannot be imported the build stops with an error
naming the cause (never an empty page).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from mkdocs.exceptions import PluginError

SCHEMA_MODULE = "mbpo_arm.configs.schema"
LAUNCH_MODULE = "mbpo_arm.launch.train_arm"
CONFIG_PAGE = "reference/configuration.md"
CONFIG_PLACEHOLDER = "<!-- config-reference -->"
LAUNCH_PAGE = "hardware/ros2.md"
LAUNCH_PLACEHOLDER = "<!-- launch-arguments -->"

_generated: dict[str, str] = {}


# ------------------------------------------------------------------------------ mkdocs events
def on_pre_build(config: Any) -> None:
    """Import the schema afresh (``mkdocs serve`` rebuilds after an edit) and render."""
    for name in [m for m in sys.modules if m == "mbpo_arm" or m.startswith("mbpo_arm.")]:
        del sys.modules[name]
    schema = _import(SCHEMA_MODULE, "the configuration reference")
    _generated[CONFIG_PAGE] = render_reference(schema)
    launch = _import(LAUNCH_MODULE, "the launch-file arguments")
    _generated[LAUNCH_PAGE] = render_launch_arguments(launch)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Put the generated text where the placeholder line is."""
    src = page.file.src_uri
    placeholders = {CONFIG_PAGE: CONFIG_PLACEHOLDER, LAUNCH_PAGE: LAUNCH_PLACEHOLDER}
    if src not in placeholders:
        return markdown
    placeholder = placeholders[src]
    if placeholder not in markdown:
        raise PluginError(f"docs/{src}: the line {placeholder} is missing; the generated "
                          "tables go there")
    return markdown.replace(placeholder, _generated[src])


def _import(module: str, what: str) -> types.ModuleType:
    try:
        return importlib.import_module(module)
    except Exception as err:  # any failure must stop the build, loudly
        raise PluginError(
            f"docs/hooks/config_reference.py: cannot import {module} to generate {what}: "
            f"{type(err).__name__}: {err}. Install the project into the docs environment "
            "(pip install -e '.[docs]') and fix the import, then build again.") from err


# ------------------------------------------------------------------------------ the walk
@dataclasses.dataclass
class Row:
    """One documented key."""

    key: str
    type: str
    default: str
    doc: str


@dataclasses.dataclass
class Section:
    """The fields of one dataclass under one dotted prefix."""

    prefix: str
    cls: type
    rows: list[Row]
    title: str = ""  # the heading; empty: the prefix
    anchor: str = ""
    note: str = ""


def anchor(prefix: str, option: str = "") -> str:
    """The id of a section's heading, e.g. ``key-agent-sac``, ``key-backend-mujoco``."""
    return "key-" + "-".join(p for p in [*prefix.split("."), option] if p) if prefix else "key-top"


def walk(cls: type, prefix: str, schema: types.ModuleType, out: list[Section],
         title: str = "", ident: str = "", note: str = "") -> None:
    """Append the section of ``cls`` at ``prefix`` and, after it, those of its sub-groups."""
    hints = _hints(cls)
    comments = field_comments(cls)
    section = Section(prefix, cls, [], title, ident or anchor(prefix), note)
    out.append(section)
    children: list[dict[str, Any]] = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        hint = hints.get(f.name, f.type)
        doc = comments.get(f.name, "")
        variants = getattr(schema, f"{f.name.upper()}_SCHEMAS", None)
        sub = _dataclass_of(f, hint, cls)
        if sub is None and isinstance(variants, dict) and variants:
            links = ", ".join(f"[`{n}`](#{anchor(key, n)})" for n in variants)
            section.rows.append(Row(key, "group", f"one of {links}", doc))
            flag = "--backend " if f.name == "backend" else f"{key}="
            for option, variant in variants.items():
                children.append(dict(cls=variant, prefix=key, ident=anchor(key, option),
                                     title=f"`{key}` with `{flag}{option}`"))
            continue
        if sub is not None:
            optional = f.default is None
            link = f"[{'`null`, ' if optional else ''}group](#{anchor(key)})"
            section.rows.append(Row(key, _type_name(f, hint), link,
                                    doc or _first_line(sub.__doc__, sub)))
            text = ("Optional: `null` unless a preset or an override sets it; these are "
                    "its keys when it is set.") if optional else ""
            children.append(dict(cls=sub, prefix=key, note=text))
            continue
        section.rows.append(Row(key, _type_name(f, hint), _default(f), doc))
    for child in children:
        walk(schema=schema, out=out, **child)


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a name that does not resolve: fall back to each field's string type
        return {}


def _dataclass_of(f: dataclasses.Field, hint: Any, owner: type) -> type | None:
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


def _type_name(f: dataclasses.Field, hint: Any) -> str:
    if isinstance(f.type, str):  # as written in the source (from __future__ import annotations)
        return f.type
    if isinstance(hint, type):
        return hint.__name__
    return re.sub(r"\btyping\.", "", repr(hint))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{_yaml(f.default)}`"
    if f.default_factory is not dataclasses.MISSING:
        try:
            return f"`{_yaml(f.default_factory())}`"
        except Exception:
            return "(computed)"
    return "required"


def _yaml(value: Any) -> str:
    """A default as it would be written in YAML or on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return value if value else '""'
    return repr(value)


def _first_line(doc: str | None, cls: type | None = None) -> str:
    """The first paragraph of a docstring, as one line ("" for dataclass's generated one)."""
    if not doc or (cls is not None and doc.startswith(f"{cls.__name__}(")):
        return ""
    return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ")


# ------------------------------------------------------------------------------ comments
def field_comments(cls: type) -> dict[str, str]:
    """The comment of each field in the class source, joined into one line.

    A field's comment is the one after it on its line (``name: type = default  # comment``),
    continued by the comment lines right below it when they are indented (``#   more``) or
    when the next field has a comment of its own. A field with no comment on its line takes
    the comment block right above it.
    """
    try:
        source = textwrap.dedent(inspect.getsource(cls))
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


# ------------------------------------------------------------------------------ groups
def group_options(schema: types.ModuleType, config_dir: Path) -> list[tuple[str, str, list]]:
    """``(group, default option, [(option, description, sets)])`` per config group."""
    registered: dict[str, dict[str, type]] = getattr(schema, "SCHEMA_OPTIONS", {}) or {}
    backends = getattr(schema, "BACKEND_SCHEMAS", {}) or {}
    registered = {**registered, "backend": {**backends, **registered.get("backend", {})}}
    defaults = _defaults_list(config_dir / "train.yaml")
    groups = sorted({p.name for p in config_dir.iterdir() if p.is_dir() and p.name != "limits"
                     and not p.name.startswith("_")} | set(registered) | set(defaults))
    result = []
    for group in groups:
        options: list[tuple[str, str, str]] = []
        for name, cls in sorted(registered.get(group, {}).items()):
            if not (config_dir / group / f"{name}.yaml").exists():
                options.append((name, f"the schema's defaults (`{cls.__name__}`): "
                                f"{_first_line(cls.__doc__, cls)}", ""))
        for path in sorted((config_dir / group).glob("*.yaml")):
            options.append((path.stem, _yaml_description(path), _yaml_sets(path, group)))
        options.sort()
        if options:
            result.append((group, defaults.get(group, ""), options))
    return result


def _defaults_list(path: Path) -> dict[str, str]:
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


def _yaml_description(path: Path) -> str:
    """The first sentence of the comment block that opens a YAML file."""
    block = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text.startswith("@package"):
            block.append(text)
    joined = " ".join(block)
    first = re.split(r"(?<!\bal)(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z(])", joined, maxsplit=1)[0]
    return first.rstrip(".") + "." if first else ""


def _yaml_sets(path: Path, group: str) -> str:
    """What a preset changes: its parents and the keys it sets, as dotted keys."""
    text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise PluginError(f"{path}: not valid YAML: {err}") from err
    is_global = re.search(r"^#\s*@package\s+_global_", text, re.M) is not None
    parents = [d for d in data.pop("defaults", []) or [] if isinstance(d, str) and d != "_self_"]
    keys: list[str] = []
    _flatten(data, "" if is_global else group, keys)
    parts = [f"extends {', '.join(f'`{p}`' for p in parents)}"] if parents else []
    if keys:
        parts.append("sets " + ", ".join(f"`{k}`" for k in keys))
    return "; ".join(parts)


def _flatten(data: Any, prefix: str, out: list[str]) -> None:
    if isinstance(data, dict):
        for k, v in data.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    else:
        out.append(f"{prefix}={_yaml(data)}")


# ------------------------------------------------------------------------------ rendering
def render_reference(schema: types.ModuleType) -> str:
    """The whole generated part of the configuration page."""
    root = getattr(schema, "RunConfig", None)
    if root is None or not dataclasses.is_dataclass(root):
        raise PluginError(f"{SCHEMA_MODULE} has no RunConfig dataclass; the configuration "
                          "reference starts from it")
    config_dir = Path(str(getattr(schema, "CONFIG_DIR", "") or _package_dir("mbpo_arm.configs")))
    sections: list[Section] = []
    walk(root, "", schema, sections)
    n_keys = sum(len(s.rows) for s in sections)
    if n_keys < 10:
        raise PluginError(f"the walk from RunConfig found only {n_keys} keys; the schema "
                          "looks broken")
    out = ["## Config groups", "",
           "Pick an option with `group=option` on the command line (`--backend` for the "
           "backend). A preset only changes values; every default is the dataclass default "
           "listed under [Keys](#keys).", ""]
    for group, default, options in group_options(schema, config_dir):
        shown = f" (default: `{default}`)" if default else ""
        out += [f"### `{group}`{shown}", "", "| option | what | changes |", "| --- | --- | --- |"]
        out += [f"| `{name}` | {_cell(desc)} | {_cell(sets) or '-'} |"
                for name, desc, sets in options]
        out.append("")
    limits = sorted((config_dir / "limits").glob("*.yaml"))
    if limits:
        out += ["### Limits files (`shield.limits_file`)", "",
                "A name below, or a path to your own file (see "
                "[the shield](../concepts/shield.md#limits-files)).", "",
                "| name | what |", "| --- | --- |"]
        out += [f"| `{p.stem}` | {_cell(_yaml_description(p))} |" for p in limits]
        out.append("")
    out += ["## Keys", "",
            f"{n_keys} keys, generated from the dataclasses at build time. Each is set on the "
            "command line as `key=value`; a list as `\"key=[a,b]\"`; `null` for none.", ""]
    for s in sections:
        title = s.title or (f"`{s.prefix}`" if s.prefix else "Top-level keys")
        doc = _first_line(s.cls.__doc__, s.cls)
        summary = f"`{s.cls.__name__}`" + (f": {_cell(doc)}" if doc else "")
        out += [f"### {title} {{#{s.anchor}}}", "", summary, ""]
        if s.note:
            out += [s.note, ""]
        out += ["| key | type | default | what |", "| --- | --- | --- | --- |"]
        out += [f"| `{r.key}` | {'group' if r.type == 'group' else f'`{r.type}`'} | "
                f"{r.default} | {_cell(r.doc)} |" for r in s.rows]
        out.append("")
    return "\n".join(out)


def render_launch_arguments(launch: types.ModuleType) -> str:
    """The table of ``launch/train_arm.py``'s arguments."""
    arguments = getattr(launch, "ARGUMENTS", None)
    if not arguments:
        raise PluginError(f"{LAUNCH_MODULE} has no ARGUMENTS; the launch arguments table is "
                          "generated from it")
    out = ["| argument | default | what |", "| --- | --- | --- |"]
    out += [f"| `{name}` | {f'`{default}`' if default else '(empty)'} | {_cell(desc)} |"
            for name, default, desc in arguments]
    return "\n".join(out)


def _package_dir(package: str) -> Path:
    from importlib.resources import files
    return Path(str(files(package)))


def _cell(text: str) -> str:
    """Comment or docstring text for a table cell: reST roles and double backticks become
    code spans, Markdown is escaped outside code spans."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(part)  # the table extension keeps pipes inside code spans
        else:
            part = part.replace("\\", "\\\\")
            for ch in "*_[]|":
                part = part.replace(ch, "\\" + ch)
            out.append(part.replace("<", "&lt;").replace(">", "&gt;"))
    return "".join(out)
