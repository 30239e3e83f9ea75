"""RFC 6902 JSON Patch (add, remove, replace, move, copy, test) with RFC 6901 JSON Pointers.

Pure and copy-on-apply: the input document is never mutated, and a patch that fails at any operation leaves
no partial result (the RFC requires the whole patch to apply or none of it).
"""

from __future__ import annotations

import copy
from typing import Any

from contrast.errors import RequestError

_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})


def _fail(reason: str, message: str) -> RequestError:
    return RequestError(f"patch_{reason}", message)


def parse_pointer(pointer: str) -> list[str]:
    """RFC 6901 tokens: ``""`` is the whole document; ``~1`` stands for ``/`` and ``~0`` for ``~``."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise _fail("invalid", f"JSON pointer {pointer!r} must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    out = []
    for t in tokens:
        # "~" must be followed by 0 or 1; anything else is malformed.
        if "~" in t.replace("~0", "").replace("~1", ""):
            raise _fail("invalid", f"JSON pointer {pointer!r} has a bad '~' escape")
        out.append(t.replace("~1", "/").replace("~0", "~"))
    return out


def _index(token: str, length: int, *, allow_end: bool, pointer: str) -> int:
    if token == "-" and allow_end:  # noqa: S105 - "-" is RFC 6901's end-of-array token
        return length
    # RFC 6901: array indices are "0" or digits without a leading zero.
    if not token.isdigit() or not token.isascii() or (len(token) > 1 and token[0] == "0"):
        raise _fail("invalid", f"{pointer}: {token!r} is not an array index")
    i = int(token)
    if i > length or (i == length and not allow_end):
        raise _fail("path_missing", f"{pointer}: index {i} is out of range")
    return i


def _parent(doc: Any, tokens: list[str], pointer: str) -> Any:
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise _fail("path_missing", f"{pointer}: no member {t!r}")
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_index(t, len(cur), allow_end=False, pointer=pointer)]
        else:
            raise _fail("path_missing", f"{pointer}: cannot descend into a scalar")
    return cur


def get(doc: Any, pointer: str) -> Any:
    tokens = parse_pointer(pointer)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _fail("path_missing", f"{pointer}: no member {last!r}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(last, len(parent), allow_end=False, pointer=pointer)]
    raise _fail("path_missing", f"{pointer}: cannot descend into a scalar")


def _add(doc: Any, pointer: str, value: Any) -> Any:
    tokens = parse_pointer(pointer)
    if not tokens:
        return value
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), allow_end=True, pointer=pointer), value)
    else:
        raise _fail("path_missing", f"{pointer}: parent is a scalar")
    return doc


def _remove(doc: Any, pointer: str) -> tuple[Any, Any]:
    tokens = parse_pointer(pointer)
    if not tokens:
        raise _fail("invalid", "removing the whole document is not supported")
    parent = _parent(doc, tokens, pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _fail("path_missing", f"{pointer}: no member {last!r}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent), allow_end=False, pointer=pointer))
    raise _fail("path_missing", f"{pointer}: parent is a scalar")


def _json_equal(a: Any, b: Any) -> bool:
    # JSON equality: bool is not a number (Python's True == 1 is not JSON's), objects ignore order.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def _field(op: dict[str, Any], name: str, i: int) -> Any:
    if name not in op:
        raise _fail("invalid", f"operation {i}: missing {name!r}")
    return op[name]


def _str_field(op: dict[str, Any], name: str, i: int) -> str:
    v = _field(op, name, i)
    if not isinstance(v, str):
        raise _fail("invalid", f"operation {i}: {name!r} must be a string")
    return v


def apply(doc: Any, patch: Any) -> Any:
    """Apply ``patch`` (a list of operation objects) to a deep copy of ``doc`` and return the result."""
    if not isinstance(patch, list):
        raise _fail("invalid", "a JSON patch is an array of operations")
    out = copy.deepcopy(doc)
    for i, op in enumerate(patch):
        if not isinstance(op, dict):
            raise _fail("invalid", f"operation {i} is not an object")
        name = _str_field(op, "op", i)
        if name not in _OPS:
            raise _fail("invalid", f"operation {i}: unknown op {name!r}")
        path = _str_field(op, "path", i)
        if name == "add":
            out = _add(out, path, copy.deepcopy(_field(op, "value", i)))
        elif name == "remove":
            out, _ = _remove(out, path)
        elif name == "replace":
            get(out, path)  # the target must exist
            if parse_pointer(path):
                out, _ = _remove(out, path)
            out = _add(out, path, copy.deepcopy(_field(op, "value", i)))
        elif name == "test":
            if not _json_equal(get(out, path), _field(op, "value", i)):
                raise _fail("test_failed", f"operation {i}: test at {path!r} failed")
        else:
            source = _str_field(op, "from", i)
            if name == "move":
                if source != path and (path + "/").startswith(source + "/"):
                    raise _fail("invalid", f"operation {i}: cannot move {source!r} into its own child")
                out, value = _remove(out, source)
            else:
                value = copy.deepcopy(get(out, source))
            out = _add(out, path, value)
    return out
