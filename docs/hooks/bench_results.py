"""MkDocs hook: the benchmark figures of ``bench/results/`` served as ``results/<name>.png``.

The PNGs stay where the benchmarks write them (outside the docs folder); the site gets the
ones the pages show at build time, so ``docs/benchmarks.md`` can show
``results/reach_mbpo_vs_sac.png`` and a re-run benchmark needs no copy. A page that shows a
figure missing from ``bench/results/`` fails the strict build (a link to a missing file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

RESULTS = Path("bench") / "results"
FIGURE = re.compile(r"\]\((?:\.\./)*results/([\w.-]+\.png)\)")


def on_files(files: Files, config: Any) -> Files:
    """Add the PNGs of ``bench/results/`` that a page links to, under ``results/``."""
    root = Path(config.config_file_path).resolve().parent
    docs = Path(config.docs_dir)
    shown = {name for page in docs.rglob("*.md") for name in FIGURE.findall(page.read_text())}
    for name in sorted(shown):
        png = root / RESULTS / name
        if png.is_file():
            files.append(File.generated(config, f"results/{name}", abs_src_path=str(png)))
    return files
