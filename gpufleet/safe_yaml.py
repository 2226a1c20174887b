"""The one YAML (and JSON) reader for every file gpufleet reads: bounded before anything is built.

``load_yaml(path, display, problems)`` returns what ``yaml.safe_load`` returns,
or None with one :class:`~gpufleet.errors.Problem` appended, for input that is
not valid or would change the fleet silently:

* duplicate keys in one mapping (YAML keeps the last one without a word);
* nesting deeper than :data:`MAX_DEPTH` collections;
* aliases that would expand to more than :data:`MAX_NODES` nodes (an "alias
  bomb": nine levels of nine aliases are 387 million strings), or an alias
  inside the collection it names (a structure that contains itself);
* a file larger than :data:`MAX_FILE_BYTES`;
* in JSON, the non-numbers ``NaN`` and ``Infinity``.

The limits hold before any Python object is built: the parser's events
(libyaml's C parser where available) are composed into nodes here, without
recursion, and the composer stops at the first event over a limit. libyaml's
own composer recurses in C (a segmentation fault at 50,000 levels) and
PyYAML's constructor in Python (RecursionError near 1,000), so neither runs on
input that has not passed. Anything past composition (tags, merge keys,
numbers, dates) is PyYAML's safe constructor, unchanged.

Ansible Vault values (``!vault |``) load as opaque :class:`VaultValue` objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from gpufleet.errors import Problem, key_path

# The limits, in one place (README "What gpufleet refuses" quotes them).
MAX_DEPTH = 64  # nested collections; the example's deepest file has 8
MAX_NODES = 2_000_000  # nodes of one document with every alias expanded; 10,000 hosts in one hosts file are ~120,000
MAX_FILE_BYTES = 16 * 2**20  # one file; a 10,000-server hosts file is ~1.5 MiB

try:
    _BaseLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _BaseLoader = yaml.SafeLoader

_STR, _MAP, _SEQ, _MERGE = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge"
_RESOLVED: dict[str, str] = {}  # plain scalar -> implicit tag, shared by every file read


@dataclass(frozen=True)
class VaultValue:
    """An Ansible Vault value (``!vault |`` and its ciphertext), kept opaque.

    gpufleet never decrypts it: it passes through to the rendered inventory as
    the same ciphertext, and a ``gpufleet_*`` variable (whose value the model
    needs) cannot be vaulted. The tags are the ones ansible-core 2.19 reads
    (``AnsibleConstructor.construct_yaml_vault`` in
    ``ansible/_internal/_yaml/_constructor.py``: ``!vault``, and the
    deprecated ``!vault-encrypted``).
    """

    ciphertext: str = field(repr=False)

    def __str__(self) -> str:
        return "<vaulted>"


class Refused(yaml.YAMLError):
    """Input over a limit or ambiguous: ``where`` is a key path or a line and column."""

    def __init__(self, where: str, message: str):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


class _Frame:
    """A collection being composed: its node, the key awaiting its value, keys seen, expanded size and height."""

    __slots__ = ("node", "key", "seen", "size", "height", "index")

    def __init__(self, node: yaml.Node):
        self.node = node
        self.key: yaml.Node | None = None
        self.seen: dict[Any, int] | None = {} if type(node) is MappingNode else None
        self.size = 1
        self.height = 1
        self.index = 0


class _Composer:
    """Nodes from parser events, iteratively, within the limits; one document."""

    def __init__(self, loader: Any):
        self.loader = loader
        self.stack: list[_Frame] = []
        self.open: set[int] = set()  # collections not yet closed: an alias to one would contain itself
        self.anchored: set[int] = set()
        self.anchors: dict[str, yaml.Node] = {}
        self.sizes: dict[int, tuple[int, int]] = {}  # anchored node -> (expanded size, height)
        self.total = 0

    def path(self) -> str:
        parts: list[Any] = []
        for frame in self.stack:
            if frame.seen is None:
                parts.append(frame.index)
            elif frame.key is not None:
                parts.append(frame.key.value if type(frame.key) is ScalarNode else "?")
        return key_path(parts)

    def document(self) -> yaml.Node | None:
        get = self.loader.get_event
        get()  # StreamStartEvent
        if self.loader.check_event(StreamEndEvent):
            get()
            return None
        get()  # DocumentStartEvent
        root = self.node()
        get()  # DocumentEndEvent
        if not self.loader.check_event(StreamEndEvent):
            event = get()
            raise yaml.composer.ComposerError("expected a single document in the stream", root.start_mark, "but found another document", event.start_mark)
        get()
        return root

    def node(self) -> yaml.Node:
        get = self.loader.get_event
        while True:
            event = get()
            kind = type(event)
            if kind is ScalarEvent:
                done, size, height = self.scalar(event), 1, 0
            elif kind is AliasEvent:
                done, size, height = self.alias(event)
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                self.start(event, MappingNode if kind is MappingStartEvent else SequenceNode)
                continue
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                frame = self.stack.pop()
                done, size, height = frame.node, frame.size, frame.height
                done.end_mark = event.end_mark
                self.open.discard(id(done))
                if id(done) in self.anchored:
                    self.sizes[id(done)] = (size, height)
            else:  # pragma: no cover - the parser emits no other event inside a document
                raise yaml.composer.ComposerError(None, None, f"unexpected {kind.__name__}", event.start_mark)
            if not self.stack:
                return done
            self.attach(done, size, height)

    def scalar(self, event: ScalarEvent) -> yaml.Node:
        tag = event.tag
        if tag is None or tag == "!":
            tag = _RESOLVED.get(event.value) if event.implicit[0] else None
            if tag is None:
                tag = self.loader.resolve(ScalarNode, event.value, event.implicit)
                if event.implicit[0] and len(_RESOLVED) < 500_000:
                    _RESOLVED[event.value] = tag
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        self.count(1, event)
        self.anchor(event, node)
        return node

    def alias(self, event: AliasEvent) -> tuple[yaml.Node, int, int]:
        node = self.anchors.get(event.anchor)
        if node is None:
            raise yaml.composer.ComposerError(None, None, f"found undefined alias {event.anchor!r}", event.start_mark)
        if id(node) in self.open:
            raise Refused(_at(event.start_mark), f"alias *{event.anchor} is inside the collection it names (a structure that contains itself); gpufleet reads no such structure")
        size, height = self.sizes.get(id(node), (1, 0))
        self.count(size, event)
        if len(self.stack) + height > MAX_DEPTH:
            raise Refused(_at(event.start_mark), f"alias *{event.anchor} nests collections more than {MAX_DEPTH} deep (gpufleet's limit)")
        return node, size, height

    def start(self, event: Any, cls: type) -> None:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(cls, None, event.implicit)
        node = cls(tag, [], event.start_mark, None, flow_style=event.flow_style)
        self.count(1, event)
        if len(self.stack) >= MAX_DEPTH:
            raise Refused(_at(event.start_mark), f"collections nested more than {MAX_DEPTH} deep (gpufleet's limit)")
        self.anchor(event, node)
        if event.anchor is not None:
            self.anchored.add(id(node))
        self.stack.append(_Frame(node))
        self.open.add(id(node))

    def anchor(self, event: Any, node: yaml.Node) -> None:
        if event.anchor is None:
            return
        if event.anchor in self.anchors:
            first = self.anchors[event.anchor]
            raise yaml.composer.ComposerError(f"found duplicate anchor {event.anchor!r}; first occurrence", first.start_mark, "second occurrence", event.start_mark)
        self.anchors[event.anchor] = node

    def count(self, n: int, event: Any) -> None:
        self.total += n
        if self.total > MAX_NODES:
            raise Refused(_at(event.start_mark), f"aliases expand this document to more than {MAX_NODES:,} nodes (gpufleet's limit)")

    def attach(self, node: yaml.Node, size: int, height: int) -> None:
        frame = self.stack[-1]
        frame.size += size
        if height + 1 > frame.height:
            frame.height = height + 1
        parent = frame.node
        if frame.seen is None:
            parent.value.append(node)
            frame.index += 1
        elif frame.key is None:
            frame.key = node
            self.duplicate(frame, node)
        else:
            parent.value.append((frame.key, node))
            frame.key = None

    def duplicate(self, frame: _Frame, key: yaml.Node) -> None:
        if type(key) is not ScalarNode or key.tag == _MERGE:
            return
        if key.tag == _STR:
            ident: Any = key.value
        else:
            try:
                ident = (1, self.loader.construct_object(key))
                hash(ident)
            except Exception:  # noqa: BLE001 - a key that does not construct fails later, with the constructor's message
                return
        first = frame.seen.get(ident)  # type: ignore[union-attr]
        if first is None:
            frame.seen[ident] = key.start_mark.line + 1  # type: ignore[index]
            return
        second = key.start_mark.line + 1
        lines = f"line {first}" if first == second else f"lines {first} and {second}"
        raise Refused(self.path(), f"duplicate key {key.value!r} ({lines}); YAML would keep only the last one: remove one")


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """The safe loader, composing within the limits, with the hot spots of large inventories made cheap.

    Plain str/map/seq nodes are built directly instead of through the
    constructor's generic dispatch. Anything else (merge keys, explicit tags,
    numbers, booleans, dates) still goes through the safe constructor, so the
    result equals ``yaml.safe_load``.
    """

    def get_single_node(self):  # noqa: ANN201 - replaces the (recursive) composer
        return _Composer(self).document()

    def construct_document(self, node):  # noqa: ANN001, ANN201
        memo: dict[int, Any] = {}
        generic = self.construct_object

        def build(n: yaml.Node) -> Any:
            tag = n.tag
            if tag == _STR and type(n) is ScalarNode:
                return n.value
            found = memo.get(id(n))
            if found is not None:
                return found
            if tag == _MAP and type(n) is MappingNode and not any(k.tag == _MERGE for k, _ in n.value):
                out: dict = {}
                memo[id(n)] = out
                for k, v in n.value:
                    key = build(k)
                    try:
                        hash(key)
                    except TypeError:
                        return generic(n, deep=True)  # raises the constructor's own error
                    out[key] = build(v)
                return out
            if tag == _SEQ and type(n) is SequenceNode:
                seq: list = []
                memo[id(n)] = seq
                seq.extend(build(c) for c in n.value)
                return seq
            return generic(n, deep=True)

        data = build(node)
        self.constructed_objects = {}
        self.recursive_objects = {}
        self.deep_construct = False
        return data


def _construct_vault(loader: yaml.SafeLoader, node: yaml.Node) -> VaultValue:
    if not isinstance(node, ScalarNode):
        raise yaml.constructor.ConstructorError(None, None, f"{node.tag} must tag a string (the vault ciphertext)", node.start_mark)
    return VaultValue(str(loader.construct_scalar(node)))


for _tag in ("!vault", "!vault-encrypted"):
    _Loader.add_constructor(_tag, _construct_vault)


# ------------------------------------------------------------------------ JSON


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise Refused(str(k), f"duplicate key {k!r}; JSON readers keep only one of them silently: remove one")
        out[k] = v
    return out


def _json_constant(name: str) -> Any:
    raise Refused("", f"{name} is not a number; give a finite number")


def _json_depth(data: Any) -> None:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise Refused("", f"collections nested more than {MAX_DEPTH} deep (gpufleet's limit)")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))


def load_json(text: str) -> Any:
    try:
        data = json.loads(text, object_pairs_hook=_json_pairs, parse_constant=_json_constant)
    except RecursionError:
        raise Refused("", f"collections nested more than {MAX_DEPTH} deep (gpufleet's limit)") from None
    _json_depth(data)
    return data


# ------------------------------------------------------------------------ files


def _read(path: Path, display: str, problems: list[Problem]) -> str | None:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        problems.append(Problem(display, "", f"cannot read: {exc.strerror}"))
        return None
    if len(raw) > MAX_FILE_BYTES:
        problems.append(Problem(display, "", f"larger than {MAX_FILE_BYTES // 2**20} MiB (gpufleet's limit for one file)"))
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(Problem(display, "", f"cannot read: {exc}"))
        return None


def load_text(text: str, display: str, problems: list[Problem], json_file: bool = False) -> Any:
    """Parse YAML (or JSON) text; a problem becomes one Problem and the result None."""
    try:
        if json_file:
            return load_json(text)
        return yaml.load(text, Loader=_Loader)
    except Refused as exc:
        problems.append(Problem(display, exc.where, exc.message))
        return None
    except (yaml.YAMLError, ValueError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = _at(mark)
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        problems.append(Problem(display, where, f"not valid YAML: {reason}"))
        return None


def load_yaml(path: Path, display: str, problems: list[Problem]) -> Any:
    """Parse one YAML (or JSON) file; a problem becomes one Problem and the result None."""
    text = _read(path, display, problems)
    if text is None:
        return None
    return load_text(text, display, problems, json_file=path.suffix == ".json")
