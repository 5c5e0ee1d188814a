"""The seed article's scripts ship verbatim: the digests in seed/README.md, and the shared originals when present."""

import hashlib
import re
from importlib import resources
from pathlib import Path

import pytest

from whyspike.scenarios.seed_examples import SEED_FILES, seed_source

SHARED = Path(__file__).resolve().parents[3] / "shared" / "seed" / "examples"


def test_vendored_scripts_match_the_digests_their_readme_records():
    readme = resources.files("whyspike.scenarios").joinpath("seed", "README.md").read_text()
    table = dict(re.findall(r"\| (ex\d_\w+\.py) \| ([0-9a-f]{64}) \|", readme))
    assert set(table) == set(SEED_FILES.values())
    for key, name in SEED_FILES.items():
        assert hashlib.sha256(seed_source(key).encode()).hexdigest() == table[name]


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared seed folder is not beside the checkout")
def test_vendored_scripts_are_byte_for_byte_the_articles():
    for key, name in SEED_FILES.items():
        assert seed_source(key) == (SHARED / name).read_text(encoding="utf-8")
