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

import dataclasses
import importlib
import re
import sys
import types
from pathlib import Path
from typing import Any

import yaml
from mkdocs.exceptions import PluginError

try:  # the reading of the dataclasses and presets is shared with `mbpo-arm --help`
    from mbpo_arm.configs.describe import (
        COMPUTED,
        REQUIRED,
        default_text,
        field_comments,
    )
    from mbpo_arm.configs.describe import dataclass_of as _dataclass_of
    from mbpo_arm.configs.describe import defaults_list as _defaults_list
    from mbpo_arm.configs.describe import first_line as _first_line
    from mbpo_arm.configs.describe import type_hints as _hints
    from mbpo_arm.configs.describe import type_name as _type_name
    from mbpo_arm.configs.describe import yaml_description as _yaml_description
    from mbpo_arm.configs.describe import yaml_value as _yaml
except ImportError as err:
    raise PluginError(f"docs/hooks/config_reference.py: cannot import mbpo_arm.configs.describe: "
                      f"{err}. Install the project into the docs environment "
                      "(pip install -e '.[docs]'), then build again.") from err

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


def _default(f: dataclasses.Field) -> str:
    text = default_text(f)
    return text if text in (COMPUTED, REQUIRED) else f"`{text}`"


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
