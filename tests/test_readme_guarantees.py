"""README's "Guarantees" section and the guarantee tests stay in step."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _guarantees_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Guarantees\n")
    return readme[start:readme.index("\n## ", start + 1)]


def _guarantee_tests() -> set[str]:
    source = "".join(path.read_text(encoding="utf-8") for path in (ROOT / "tests").glob("test_guarantee_*.py"))
    return set(re.findall(r"^def (test_\w+)\(", source, re.MULTILINE))


def test_every_test_readme_cites_as_proof_exists():
    cited = set(re.findall(r"`(test_\w+)`", _guarantees_section()))
    assert cited and cited <= _guarantee_tests(), sorted(cited - _guarantee_tests())


def test_every_guarantee_test_is_cited_in_readme():
    cited = set(re.findall(r"`(test_\w+)`", _guarantees_section()))
    assert _guarantee_tests() <= cited, sorted(_guarantee_tests() - cited)
