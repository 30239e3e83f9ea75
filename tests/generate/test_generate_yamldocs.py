"""Splitting multi-document YAML while keeping every document's bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from contrast.errors import RequestError
from contrast.generate.yamldocs import dump_document, iter_yaml_paths, parse_file, split_documents

STREAM = """# leading comment
apiVersion: v1
kind: ConfigMap
metadata: {name: a}   # odd spacing, kept
data:
  script: |
    --- not a marker: indented
    echo hi
---
# second
apiVersion: v1
kind: Service
metadata:
  name: b
--- # marker with a comment
apiVersion: v1
kind: Secret
metadata: {name: c}
...
"""


def test_split_concatenates_back_exactly() -> None:
    pieces = split_documents(STREAM)
    assert "".join(pieces) == STREAM
    assert len(pieces) == 4  # three documents and the "..." end marker


def test_parse_keeps_text_and_matches_pyyaml() -> None:
    f = parse_file(Path("x.yaml"), STREAM)
    datas = [d.data for d in f.documents if d.data is not None]
    assert datas == list(yaml.safe_load_all(STREAM))
    assert f.render() == STREAM
    assert not f.changed


def test_invalid_yaml_is_refused() -> None:
    with pytest.raises(RequestError) as e:
        parse_file(Path("x.yaml"), "a: [1, 2\n")
    assert e.value.code == "request.yaml_invalid"


@pytest.mark.parametrize(
    "text",
    [
        "kind: Pod\nkind: Deployment\n",
        "spec:\n  containers:\n  - name: app\n    command: [/bin/app]\n    command: [/bin/sh]\n",
        "a: {x: 1, x: 2}\n",
        "---\na: 1\n---\nb: 1\nb: 2\n",
    ],
)
def test_a_key_twice_is_refused(text: str) -> None:
    """kubectl refuses a key twice; PyYAML would keep the last value, a reader the first."""
    with pytest.raises(RequestError) as e:
        parse_file(Path("x.yaml"), text)
    assert e.value.code == "request.yaml_invalid"


def test_merge_keys_still_override() -> None:
    f = parse_file(Path("x.yaml"), "base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  x: 3\n")
    assert f.documents[0].data["use"] == {"x": 3, "y": 2}


def test_dump_keeps_header_comments_and_literal_scripts() -> None:
    out = dump_document({"a": "line1\nline2\n"}, "--- # doc\n# about a\na: 1\n")
    assert out.startswith("--- # doc\n# about a\n")
    assert "a: |\n  line1\n  line2\n" in out
    assert yaml.safe_load(out) == {"a": "line1\nline2\n"}


def test_directories_are_read_recursively_in_stable_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.yml").write_text("a: 1\n")
    (tmp_path / "a.yaml").write_text("a: 2\n")
    (tmp_path / "notes.txt").write_text("not yaml")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_yaml_paths([tmp_path, tmp_path / "a.yaml"])]
    assert found == ["a.yaml", "b/z.yml"]
    with pytest.raises(RequestError):
        list(iter_yaml_paths([tmp_path / "missing"]))


_scalar = st.one_of(
    st.integers(), st.booleans(), st.none(), st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
)
_doc = st.dictionaries(
    st.text(alphabet="abcdefghij-_", min_size=1, max_size=8),
    st.one_of(_scalar, st.lists(_scalar, max_size=3)),
    min_size=1,
    max_size=5,
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_doc, min_size=1, max_size=4), st.sampled_from(["block", "flow"]))
def test_any_stream_splits_exactly(docs: list[dict[str, object]], style: str) -> None:
    text = yaml.safe_dump_all(docs, default_flow_style=(style == "flow"), allow_unicode=True)
    f = parse_file(Path("p.yaml"), text)
    assert f.render() == text
    # Compared with PyYAML's own reading of the stream (PyYAML does not round-trip every string, e.g. U+0085).
    assert [d.data for d in f.documents if d.data is not None] == list(yaml.safe_load_all(text))
