"""Every relative link in the user-facing Markdown (README, docs/, model cards, the device and deploy
READMEs) points at a file that exists, and every `#anchor` at a heading of its target, with
GitHub's heading slugs. Modules and docs move; a dead link is the first thing a reader hits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "models").rglob("*.md")),
    ROOT / "scripts" / "device" / "README.md",
    ROOT / "deploy" / "README.md",
]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def heading_slugs(markdown: str) -> set[str]:
    """GitHub's anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    slugs: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", markdown).splitlines():
        if not line.startswith("#"):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        slugs.add(slug if n == 0 else f"{slug}-{n}")
    return slugs


def dead_links(doc: Path) -> list[str]:
    dead = []
    for target in LINK.findall(FENCE.sub("", doc.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            dead.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in heading_slugs(dest.read_text()):
            dead.append(f"{target} (no such heading)")
    return dead


def test_slugs_follow_github():
    text = "# Calibrated thresholds\n## 2026-11-26/27: runs\n## `qc-stream bench`\n## Bench\n## Bench\n"
    assert heading_slugs(text) == {
        "calibrated-thresholds",
        "2026-11-2627-runs",
        "qc-stream-bench",
        "bench",
        "bench-1",
    }


def test_a_dead_link_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Present\n")
    doc = tmp_path / "page.md"
    doc.write_text("[a](other.md#present) [b](other.md#absent) [c](gone.md) [d](https://x.org/y)\n")
    assert dead_links(doc) == ["other.md#absent (no such heading)", "gone.md (no such file)"]


@pytest.mark.parametrize(
    "doc", [d for d in DOCS if d.exists()], ids=lambda d: str(d.relative_to(ROOT))
)
def test_relative_links_resolve(doc):
    assert dead_links(doc) == []
