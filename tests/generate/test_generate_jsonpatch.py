"""RFC 6902 JSON Patch: the RFC's own Appendix A examples, error cases, and properties."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contrast.errors import RequestError
from contrast.generate import jsonpatch

# (name, document, patch, expected result) from RFC 6902 Appendix A.
RFC_EXAMPLES: list[tuple[str, Any, list[dict[str, Any]], Any]] = [
    (
        "A.1 add member",
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux"}],
        {"baz": "qux", "foo": "bar"},
    ),
    (
        "A.2 add array element",
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
    ),
    ("A.3 remove member", {"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    (
        "A.4 remove array element",
        {"foo": ["bar", "qux", "baz"]},
        [{"op": "remove", "path": "/foo/1"}],
        {"foo": ["bar", "baz"]},
    ),
    (
        "A.5 replace",
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
    ),
    (
        "A.6 move member",
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
    ),
    (
        "A.7 move array element",
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
    ),
    (
        "A.8 test success",
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
        {"baz": "qux", "foo": ["a", 2, "c"]},
    ),
    (
        "A.10 add nested member",
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
    ),
    (
        "A.12 add to nonexistent target fails",
        {"foo": "bar"},
        [{"op": "add", "path": "/baz/bat", "value": "qux"}],
        RequestError,
    ),
    (
        "A.14 ~ escaping",
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": 10}],
        {"/": 9, "~1": 10},
    ),
    (
        "A.15 test not string vs number",
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": "10"}],
        RequestError,
    ),
    (
        "A.16 add array value",
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
    ),
    ("A.9 test failure", {"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], RequestError),
    ("copy", {"a": {"b": 1}}, [{"op": "copy", "from": "/a", "path": "/c"}], {"a": {"b": 1}, "c": {"b": 1}}),
]


@pytest.mark.parametrize(("name", "doc", "patch", "expected"), RFC_EXAMPLES, ids=[e[0] for e in RFC_EXAMPLES])
def test_rfc_examples(name: str, doc: Any, patch: list[dict[str, Any]], expected: Any) -> None:
    original = copy.deepcopy(doc)
    if expected is RequestError:
        with pytest.raises(RequestError):
            jsonpatch.apply(doc, patch)
    else:
        assert jsonpatch.apply(doc, patch) == expected
    assert doc == original  # never mutated, even on failure


@pytest.mark.parametrize(
    ("patch", "code"),
    [
        ({"op": "add"}, "request.patch_invalid"),
        ([{"op": "frobnicate", "path": "/a"}], "request.patch_invalid"),
        ([{"op": "add", "path": "a", "value": 1}], "request.patch_invalid"),
        ([{"op": "add", "path": "/a"}], "request.patch_invalid"),
        ([{"op": "remove", "path": "/missing"}], "request.patch_path_missing"),
        ([{"op": "replace", "path": "/missing", "value": 1}], "request.patch_path_missing"),
        ([{"op": "add", "path": "/l/01", "value": 1}], "request.patch_invalid"),
        ([{"op": "add", "path": "/l/5", "value": 1}], "request.patch_path_missing"),
        ([{"op": "move", "from": "/d", "path": "/d/x"}], "request.patch_invalid"),
        ([{"op": "test", "path": "/t", "value": 1}], "request.patch_test_failed"),  # true is not 1 in JSON
        ([{"op": "add", "path": "/a~2", "value": 1}], "request.patch_invalid"),
    ],
)
def test_errors(patch: Any, code: str) -> None:
    with pytest.raises(RequestError) as e:
        jsonpatch.apply({"l": [0], "d": {}, "t": True}, patch)
    assert e.value.code == code


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=6), _json, max_size=4), st.text(max_size=6), _json)
def test_add_then_test_then_remove(doc: dict[str, Any], key: str, value: Any) -> None:
    ptr = "/" + key.replace("~", "~0").replace("/", "~1")
    added = jsonpatch.apply(
        doc, [{"op": "add", "path": ptr, "value": value}, {"op": "test", "path": ptr, "value": value}]
    )
    assert jsonpatch.get(added, ptr) == value
    removed = jsonpatch.apply(added, [{"op": "remove", "path": ptr}])
    assert removed == {k: v for k, v in doc.items() if k != key}
