"""Finding event files: which directories hold runs, and the order their files were written in."""

from __future__ import annotations

import os
import re
from pathlib import Path

MAX_DEPTH = 4  # logdir/<experiment>/<date>/<train|validation>/events...: deep enough for Keras and Lightning
_STAMP = re.compile(r"tfevents\.(\d+)")


def is_event_file(name: str) -> bool:
    return "tfevents" in name.lower()


def writing_order(path: Path) -> tuple[int, str]:
    """Writers name files ``events.out.tfevents.<unix time>.<host>...``: sort by that time, then by name."""
    m = _STAMP.search(path.name)
    return (int(m.group(1)) if m else 0, path.name)


def _walk(root: Path, max_depth: int, budget: int | None = None):
    """Yield (directory relative to root, event files in it), breadth first, hidden directories skipped; stop after
    ``budget`` directory entries (sniffing must stay cheap even when pointed at a data set's folder)."""
    level = [(root, "")]
    seen = 0
    for depth in range(max_depth + 1):
        nxt = []
        for folder, rel in level:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            seen += len(entries)
            if budget is not None and seen > budget:
                return
            files = []
            for e in entries:
                try:
                    if e.is_dir():
                        if depth < max_depth and not e.name.startswith("."):
                            nxt.append((Path(e.path), f"{rel}/{e.name}" if rel else e.name))
                    elif is_event_file(e.name) and e.is_file():
                        files.append(Path(e.path))
                except OSError:
                    continue
            if files:
                yield rel, sorted(files, key=writing_order)
        level = sorted(nxt, key=lambda item: item[1])


def run_directories(root: Path, max_depth: int = MAX_DEPTH) -> dict[str, list[Path]]:
    """Event files under ``root`` grouped by directory relative to it ('' for root itself), in writing order."""
    return dict(_walk(root, max_depth))


def holds_event_files(root: Path, max_depth: int = MAX_DEPTH, budget: int = 20_000) -> bool:
    return next(_walk(root, max_depth, budget), None) is not None
