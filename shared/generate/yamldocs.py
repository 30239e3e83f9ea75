"""Read multi-document Kubernetes YAML while keeping every document's original text.

``generate`` rewrites only confidential workloads; every other document must come out byte for byte as it went
in (comments, key order, quoting). So a file is split into segments at YAML document markers, each segment
keeps its exact text, and only the segments that ``generate`` changes are re-serialised.

Splitting on marker lines is exact, not a heuristic: in YAML a line that starts with ``---`` or
``...`` followed by white space or the end of the line is a document marker and can never be content, not
even inside a block scalar. The split is cross-checked against PyYAML's own parse of the whole stream.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from contrast.errors import RequestError

_MARKER = re.compile(r"^(---|\.\.\.)(?=[ \t\r\n]|$)", re.MULTILINE)
YAML_SUFFIXES = (".yaml", ".yml")
# A manifest directory is not a place for huge files; refuse instead of reading a disk image by mistake.
MAX_FILE_BYTES = 16 * 1024 * 1024


@dataclass
class Document:
    """One YAML document: its original text (marker line included) and, once loaded, its data."""

    text: str
    data: Any = None
    new_text: str | None = None  # set when generate changed the document

    @property
    def output(self) -> str:
        return self.text if self.new_text is None else self.new_text


@dataclass
class YamlFile:
    path: Path
    documents: list[Document] = field(default_factory=list)

    def render(self) -> str:
        return "".join(d.output for d in self.documents)

    @property
    def changed(self) -> bool:
        return any(d.new_text is not None and d.new_text != d.text for d in self.documents)


def split_documents(text: str) -> list[str]:
    """Split ``text`` at document markers; the pieces concatenate back to ``text`` exactly."""
    starts = [m.start() for m in _MARKER.finditer(text)]
    cuts = sorted({0, *starts})
    pieces = [text[a:b] for a, b in zip(cuts, [*cuts[1:], len(text)], strict=True)]
    return [p for p in pieces if p]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key twice in one mapping is an error, as kubectl makes it.

    PyYAML keeps the last value; a reader of the file, or another tool, may take the first. generate must
    pin the pod that everyone sees, so it refuses the ambiguity (merge keys, ``<<``, still override).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # an unhashable key: the base constructor refuses it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found key {key!r} twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _is_blank(data: Any) -> bool:
    return data is None


def parse_file(path: Path, text: str) -> YamlFile:
    """Parse one file into documents. Empty documents (comments only) are kept as pass-through text."""
    try:
        expected = [d for d in yaml.load_all(text, Loader=_Loader) if not _is_blank(d)]
    except yaml.YAMLError as exc:
        raise RequestError("yaml_invalid", f"{path}: not valid YAML: {exc}") from exc
    out = YamlFile(path=path)
    loaded: list[Any] = []
    for piece in split_documents(text):
        body = piece
        # A "..." end marker closes the previous document; what follows on its line is not a document.
        if piece.startswith("..."):
            out.documents.append(Document(text=piece))
            continue
        try:
            data = yaml.load(body, Loader=_Loader)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as exc:
            raise RequestError("yaml_invalid", f"{path}: not valid YAML: {exc}") from exc
        out.documents.append(Document(text=piece, data=data))
        if not _is_blank(data):
            loaded.append(data)
    if loaded != expected:
        # Never silently mis-split: a mismatch means the text uses YAML we do not model (directives, ...).
        raise RequestError(
            "yaml_unsupported", f"{path}: could not split the YAML stream into documents safely"
        )
    return out


def iter_yaml_paths(paths: list[Path]) -> Iterator[Path]:
    """Files named directly, and ``*.yaml``/``*.yml`` under directories, recursively, in a stable order."""
    seen: set[Path] = set()
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix in YAML_SUFFIXES)
        elif p.is_file():
            found = [p]
        else:
            raise RequestError("path_missing", f"{p}: no such file or directory")
        for q in found:
            key = q.resolve()
            if key not in seen:
                seen.add(key)
                yield q


def read_file(path: Path) -> YamlFile:
    raw = path.read_bytes()
    if len(raw) > MAX_FILE_BYTES:
        raise RequestError("too_large", f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError("yaml_invalid", f"{path}: not UTF-8") from exc
    return parse_file(path, text)


class _Dumper(yaml.SafeDumper):
    """Safe dumper that writes multi-line strings (scripts) as readable literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        # PyYAML falls back to a quoted style itself when a literal block cannot hold the value exactly.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


def _header(original: str) -> str:
    """The original's leading marker and comment lines, which re-serialising would otherwise drop."""
    out = []
    for line in original.splitlines(keepends=True):
        stripped = line.strip()
        if _MARKER.match(line) and line.startswith("---"):
            # Content after "---" on the same line belongs to the document body, not the header.
            out.append("---\n" if stripped != "---" and not stripped[3:].lstrip().startswith("#") else line)
        elif stripped == "" or stripped.startswith("#"):
            out.append(line)
        else:
            break
    text = "".join(out)
    return text if not text or text.endswith("\n") else text + "\n"


def dump_document(data: Any, original: str) -> str:
    """Serialise a changed document, keeping the original's leading marker and comment lines."""
    body = yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100_000
    )
    return _header(original) + body
