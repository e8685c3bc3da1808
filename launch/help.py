"""The text of ``mbpo-arm <command> --help`` for the commands that take ``key=value`` settings:
the config groups with their options, the keys with their defaults and the comment beside
each in the dataclasses (:mod:`mbpo_arm.configs.describe`), and examples. Built only when help
is asked for; imports nothing heavy.
"""

from __future__ import annotations

import functools
import re
import shutil
import textwrap

from mbpo_arm.configs.describe import (
    FieldDoc,
    defaults_list,
    describe,
    first_line,
    first_sentence,
    group_options,
)
from mbpo_arm.configs.schema import (
    BACKEND_SCHEMAS,
    CONFIG_DIR,
    SCHEMA_OPTIONS,
    TOP_KEYS,
    RunConfig,
)

REFERENCE = "docs/reference/configuration.md"
KEY_COLUMN = 28  # where the text beside a key or option starts

# What each command does, in a user's words (the first paragraph of its help).
DESCRIPTIONS = {
    "train": "Train an agent on the MuJoCo twin or on a real arm. Everything else on the line "
             "is a setting: group=option picks a preset (agent=mbpo_reach), key=value sets one "
             "key (trainer.total_steps=20000). Results go to run_dir; resume=RUN continues a "
             "run from its last checkpoint, verified first; resume.fallback=true continues "
             "from the newest intact one when the last is damaged.",
    "collect": "Make an offline dataset (.npz) in the twin with a behaviour policy. The "
               "settings of a run choose the task, the backend and the seed.",
    "pretrain": "Train a model-based agent offline (MOPO) on a dataset, without robot time; "
                "then fine-tune online with `mbpo-arm train init_from=RUN`.",
    "calibrate": "Calibrate a serial arm, step by step in the terminal: it asks for the zero "
                 "pose and each joint's range and writes the file backend.calibration.",
}
# The keys a command reads itself (not run settings): name -> (default, what).
OWN_KEYS = {
    "collect": {
        "out": ("required", "the dataset file to write (.npz)"),
        "policy": ("random", "random, medium or expert (a scripted reach controller, with or "
                             "without noise), checkpoint (a trained run's policy plus noise), "
                             "mixed (a training run's whole replay)"),
        "episodes": ("100", "episodes to collect"),
        "noise": ("0", "std of the action noise (policy=medium: 0.55)"),
        "checkpoint": ("-", "the run directory, for policy=checkpoint or mixed"),
    },
    "pretrain": {"dataset": ("required", "the dataset file (from `mbpo-arm collect` or "
                                         "`mbpo-arm dataset import`)")},
    "calibrate": {"port": ("/dev/ttyACM0", "the bus adapter's device (short for backend.port)")},
}
# Per command: the groups shown, the keys listed one by one, and whether every sub-tree of
# keys gets a line of its own.
SHOWN = {
    "train": (("backend", "task", "agent", "runtime", "robot", "logger"), TOP_KEYS, True),
    "collect": (("task", "backend"), ("seed",), False),
    "pretrain": (("task", "agent"), ("seed", "device", "precision", "run_dir"), True),
    "calibrate": (("robot",), ("backend.calibration", "backend.protocol", "backend.baudrate",
                               "backend.ids", "backend.zero_pose"), False),
}
EXAMPLES = {
    "train": ["mbpo-arm train", "mbpo-arm train agent=mbpo_reach trainer.total_steps=20000 seed=1",
              "mbpo-arm train --show-config agent=mbpo_reach",
              "mbpo-arm train runtime=async runtime.control_hz=50",
              "mbpo-arm train --backend serial robot=so101 port=/dev/ttyACM0",
              "mbpo-arm train resume=runs/RUN trainer.total_steps=60000",
              "mbpo-arm train resume=runs/RUN resume.fallback=true"],
    "collect": ["mbpo-arm collect task=reach policy=medium episodes=200 out=data/reach.npz",
                "mbpo-arm collect task=hopper policy=checkpoint checkpoint=runs/RUN noise=0.3 "
                "out=data/hopper.npz"],
    "pretrain": ["mbpo-arm pretrain dataset=data/reach.npz agent=mopo_reach run_dir=runs/mopo",
                 "mbpo-arm train agent=mbpo_reach init_from=runs/mopo"],
    "calibrate": ["mbpo-arm calibrate robot=so101 port=/dev/ttyACM0",
                  "mbpo-arm calibrate robot=koch port=/dev/ttyUSB0 "
                  "backend.calibration=~/koch.json"],
}
# The schema's group of resume options, set on the command line as resume.<key>=.
RESUME_OPTIONS = "resume_options"
# What the --backend choice means for the backend.* keys.
BACKEND_TEXT = "the robot backend's settings; which keys depends on --backend"


def _width() -> int:
    return max(60, min(100, shutil.get_terminal_size().columns - 2))


def description(command: str) -> str:
    """The first paragraph of a command's help, wrapped."""
    return textwrap.fill(DESCRIPTIONS[command], _width())


def epilog(command: str) -> str:
    """Everything after the options: groups, keys, sub-trees, where to read more, examples."""
    width = _width()
    groups, keys, trees = SHOWN[command]
    out: list[str] = []
    if command in OWN_KEYS:
        out += [f"{command} settings (key=value):"]
        out += [row(f"{k}={d}", text, width) for k, (d, text) in OWN_KEYS[command].items()]
        out.append("")
    out += ["config groups (group=option; a preset changes a few keys):"]
    out += [line for g in groups for line in group_lines(g, width)]
    backend = "serial" if command == "calibrate" else "mujoco"
    fields = leaf_fields(backend)
    out += ["", "keys (key=value, default shown):"]
    out += [line for k in keys for line in key_rows(k, fields, width)]
    if trees:
        out += ["", "more keys, by group:"]
        out += [row(f"{prefix}.*", text, width) for prefix, text in sub_trees()]
    show = f"mbpo-arm {command} --show-config [settings]"
    out += ["", textwrap.fill(f"Every key with its value: {show}. What each key means: "
                              f"{REFERENCE}.", width), "", "examples:"]
    out += [f"  {e}" for e in EXAMPLES[command]]
    return "\n".join(out)


def key_rows(key: str, fields: dict[str, FieldDoc], width: int) -> list[str]:
    """The row of ``key``; ``resume`` is followed by its options (``resume.fallback``)."""
    shown = [(key, fields[key])]
    if key == "resume":
        shown += [(f"resume.{k.removeprefix(RESUME_OPTIONS + '.')}", f)
                  for k, f in fields.items() if k.startswith(RESUME_OPTIONS + ".")]
    return [row(f"{k}={f.default}", first_sentence(f.doc) or "", width) for k, f in shown]


def row(left: str, text: str, width: int) -> str:
    """``  left   text``, the text wrapped under itself; a long ``left`` gets its own line."""
    head = f"  {left}"
    indent = " " * KEY_COLUMN
    text = text.rstrip(".")
    if not text:
        return head
    if len(head) >= KEY_COLUMN - 1:
        return head + "\n" + textwrap.fill(text, width, initial_indent=indent,
                                           subsequent_indent=indent)
    return textwrap.fill(text, width, initial_indent=head.ljust(KEY_COLUMN),
                         subsequent_indent=indent)


def group_lines(group: str, width: int) -> list[str]:
    """The group, what it is, and one line per option (the default marked)."""
    default = _defaults().get(group, "")
    comments = {f.name: f.doc for f in describe(RunConfig)}
    what = {"backend": "the robot: the MuJoCo twin or a real arm (also --backend NAME)",
            "robot": "a serial arm preset (with --backend serial)"}.get(group, comments.get(group))
    lines = [f"  {group}: {what}" if what else f"  {group}:"]
    listed = group_options(CONFIG_DIR, SCHEMA_OPTIONS, group)
    listed.sort(key=lambda option: option[0] != default)  # the default first
    if default == "null":
        listed.insert(0, ("null", "none"))
    for name, text in listed:
        mark = " (default)" if name == default else ""
        lines.append(row(f"  {name}{mark}", short(text, width - KEY_COLUMN), width))
    return lines


@functools.cache
def _defaults() -> dict[str, str]:
    return defaults_list(CONFIG_DIR / "train.yaml")


def short(text: str, limit: int) -> str:
    """A preset's description cut to one line: the part before its first colon or semicolon,
    without what is in parentheses (or only its first part if little else is left), before
    its first comma if still long, at last cut at a word."""
    text = " ".join(text.replace("``", "").split()).rstrip(".")
    for sep in (": ", "; "):
        text = _outside_parentheses(text, sep)
    bare = _drop_parentheses(text)
    if len(bare) >= 12:
        text = bare
    elif "(" in text:  # "MBPO (Janner et al. 2019, ...)" -> "MBPO (Janner et al. 2019)"
        head, _, inside = text.partition("(")
        text = f"{head}({_outside_parentheses(inside, ', ').split(')')[0]})"
    if len(text) > limit:
        text = _outside_parentheses(text, ", ")
    if len(text) > limit:
        text = text[: limit - 3].rsplit(" ", 1)[0].rstrip(",;:(") + "..."
    return text


def _outside_parentheses(text: str, sep: str) -> str:
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and text.startswith(sep, i):
            return text[:i]
    return text


def _drop_parentheses(text: str) -> str:
    out, depth = [], 0
    for ch in text:
        depth += ch == "("
        if depth == 0:
            out.append(ch)
        depth -= ch == ")" and depth > 0
    return re.sub(r"\s+([,;:.])", r"\1", " ".join("".join(out).split()))


def leaf_fields(backend: str) -> dict[str, FieldDoc]:
    """Every key of the tree by its dotted name, the backend's keys those of ``backend``."""
    found: dict[str, FieldDoc] = {}

    def walk(cls: type, prefix: str) -> None:
        for f in describe(cls):
            key = f"{prefix}{f.name}"
            if key == "backend":
                walk(BACKEND_SCHEMAS[backend], "backend.")
            elif f.sub is not None:
                walk(f.sub, f"{key}.")
            else:
                found[key] = f

    walk(RunConfig, "")
    return found


def sub_trees() -> list[tuple[str, str]]:
    """``(prefix, what)`` of each group of keys under the top level, nested ones too."""
    out: list[tuple[str, str]] = [("backend", BACKEND_TEXT)]

    def walk(cls: type, prefix: str) -> None:
        for f in describe(cls):
            if f.sub is None or f.name == RESUME_OPTIONS:  # listed beside resume
                continue
            key = f"{prefix}{f.name}"
            out.append((key, first_sentence(f.doc) or first_line(f.sub.__doc__, f.sub)))
            walk(f.sub, f"{key}.")

    walk(RunConfig, "")
    return out
