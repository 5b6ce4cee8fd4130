"""docs/topology.md cannot drift from the schema: it is regenerated here and compared,
every field of the schema must have an example in examples/reference.yaml, and every
enum word the page shows must be accepted by the loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.topology import load_topology, load_topology_file
from orchestrator.topology_doc import REFERENCE, _descriptors, enum_spellings, generate
from orchestrator.topology_doc import missing_examples as missing

REPO = Path(__file__).resolve().parents[2]
FIX = "python -m orchestrator.topology_doc > docs/topology.md"


def test_the_page_is_what_the_schema_generates() -> None:
    assert (REPO / "docs" / "topology.md").read_text() == generate(), f"run: {FIX}"


def test_every_field_has_an_example_in_the_reference_file() -> None:
    assert missing() == [], "add these to examples/reference.yaml, then: " + FIX
    load_topology_file(REFERENCE)  # and the reference file loads


def test_every_field_of_the_schema_has_a_row() -> None:
    page = (REPO / "docs" / "topology.md").read_text()
    for d in _descriptors():
        section = page.split(f"## {d.name}\n", 1)[1].split("\n## ", 1)[0]
        for field in d.fields:
            assert f"| `{field.json_name}` |" in section, (d.name, field.name)


ENUMS = [(f.name, w) for d in _descriptors() for f in d.fields if f.enum_type is not None
         for w in enum_spellings(f)]


@pytest.mark.parametrize(("field", "word"), ENUMS, ids=[f"{f}={w}" for f, w in ENUMS])
def test_every_enum_word_on_the_page_loads(field: str, word: str) -> None:
    where = {
        "restart": "    restart: {w}\n",
        "network": "    network: {w}\n",
        "strategy": "    placement: {{strategy: {w}}}\n",
        "pool": "    placement: {{pool: {w}}}\n",
        "protocol": "    ports: [{{port: 80, protocol: {w}}}]\n",
    }
    text = (
        "apiVersion: capstan/v1\nkind: Application\nname: a\nservices:\n  s:\n"
        "    image: local/busybox:1\n" + where[field].format(w=word)
    )
    load_topology(text)
