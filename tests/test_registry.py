"""One home per requirement: the registry (conformance/requirements.py) and docs/protocol.md say
the same thing, every case cites words of the requirements it judges, every requirement is
judged by something, and no module keeps its own list of IDs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conformance import cases as registry
from conformance.requirements import CHECKER_IDS, REQUIREMENTS

ROOT = Path(__file__).parent.parent
ID = re.compile(r"^[A-Z]+-\d+$")


def _fold(text: str) -> str:
    return " ".join(text.split())


def protocol() -> dict[str, str]:
    """ID -> sentence, as docs/protocol.md states each requirement (`- **ID** text`)."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    items = re.findall(r"^- \*\*([A-Z]+-\d+)\*\* (.*?)(?=^\S|^- |\Z)", text, re.S | re.M)
    return {rid: _fold(body) for rid, body in items}


def test_the_registry_and_the_contract_name_the_same_requirements():
    doc = protocol()
    assert sorted(set(doc) - set(REQUIREMENTS)) == [], "in docs/protocol.md, missing from the registry"
    assert sorted(set(REQUIREMENTS) - set(doc)) == [], "in the registry, missing from docs/protocol.md"
    assert list(doc) == list(REQUIREMENTS), "the registry keeps the contract's order"


@pytest.mark.parametrize("rid", list(REQUIREMENTS))
def test_the_registry_holds_the_sentence_of_the_contract(rid):
    assert _fold(REQUIREMENTS[rid].sentence) == protocol()[rid]


@pytest.mark.parametrize("case", registry.load_all(), ids=lambda c: c.name)
def test_every_case_cites_the_words_it_enforces(case):
    unknown = [rid for rid in case.reqs if rid not in REQUIREMENTS]
    assert not unknown, f"{case.name} judges requirements the contract does not have: {unknown}"
    missing = [rid for rid in case.reqs if not case.cites.get(rid)]
    assert not missing, f"{case.name} cites no words for {missing}"
    for rid, words in case.cites.items():
        assert rid in case.reqs, f"{case.name} cites {rid}, which it does not judge"
        assert _fold(words) in _fold(REQUIREMENTS[rid].sentence), (
            f"{case.name}: {words!r} is not in {rid}'s sentence: {REQUIREMENTS[rid].sentence!r}")


def test_case_names_are_unique():
    names = [c.name for c in registry.load_all()]
    assert len(names) == len(set(names))


def test_every_requirement_is_judged_by_something():
    judged = {rid for c in registry.load_all() for rid in c.reqs} | set(CHECKER_IDS)
    nobody = {rid for rid, r in REQUIREMENTS.items() if rid not in judged and not r.elsewhere}
    assert not nobody, f"no case, checker rule or simulator judges {sorted(nobody)}"


def _id_lists(path: Path) -> list[tuple[int, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            values = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if len(values) >= 4 and len(values) == len(node.elts) and all(ID.match(v) for v in values):
                found.append((node.lineno, values))
    return found


def test_no_module_keeps_its_own_list_of_requirement_ids():
    """A list of IDs outside the registry drifts from it: derive it from the registry instead."""
    sources = [p for d in ("conformance", "scenarios", "scopehub", "reference", "bench") for p in (ROOT / d).rglob("*.py")]
    copies = {str(p.relative_to(ROOT)): lists for p in sources if p.name != "requirements.py"
              for lists in [_id_lists(p)] if lists}
    assert not copies, copies


def test_the_page_of_checks_is_the_registry_and_the_cases():
    """docs/checks.md is generated (python -m conformance.catalog > docs/checks.md): it must not drift."""
    from conformance.catalog import render

    assert (ROOT / "docs" / "checks.md").read_text() == render(), "run: python -m conformance.catalog > docs/checks.md"


def test_the_checker_judges_exactly_what_the_registry_says():
    from conformance.checker import Checker

    assert set(Checker._EVIDENCE) == set(CHECKER_IDS)
