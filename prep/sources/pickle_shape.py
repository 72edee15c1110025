"""The shape of an untrusted pickle, checked from its opcodes before anything is built.

Unpickling runs in C and cannot be interrupted: a dict key that is a tuple nested 60 levels
deep, each level holding two references to the one below, is a few hundred bytes on disk and
2^60 nodes to hash, so building it never ends and Ctrl-C cannot stop it. :func:`check_pickle_shape`
reads the opcodes in plain Python (Ctrl-C stops it, and it takes time in proportion to the
file's size), simulating the stack and the memo without building anything, and refuses with a
:class:`PickleShapeError` that says why:

- a dict key other than ``str`` or ``bytes`` (building a dict hashes its keys, and hashing a
  tuple walks all of it), and any set or frozenset (their members are hashed too);
- a container that contains itself;
- nesting deeper than :data:`MAX_DEPTH` levels;
- more than :data:`MAX_OBJECTS` objects pushed;
- memo references that expand the structure (what a walk over it visits: a hash, a callable
  given it as arguments) beyond :data:`EXPANSION` times the objects the file spells out, plus
  :data:`EXPANSION_SLACK`;
- persistent ids, unless asked for (``torch.save`` refers to storages by them);
- a stream that is truncated or malformed (in the words ``pickle`` would use).

CIFAR batches (:mod:`prep.sources.cifar`) and the pickle inside prep's torch files
(:func:`prep.files.read_torch_bounded`: whitening files and whitening checkpoints, which
``torch.load(weights_only=True)`` would otherwise hash just the same) are checked.

Which callables the pickle may name (``GLOBAL``) is the unpickler's ``find_class``'s business.
The result of a call is opaque here: containers that refer to it count it as one object, while
the arguments and the state it was built from count in full, once. So once a file passes, the
unpickler's work is bounded by a small multiple of the file's size.
"""

from __future__ import annotations

MAX_DEPTH = 32  # a CIFAR batch nests 6 levels (dict, array, its state, dtype, its state, a value), torch files 8
MAX_OBJECTS = 5_000_000  # a CIFAR-100 batch of 50,000 images pushes about 250,000
EXPANSION = 2
EXPANSION_SLACK = 10_000


class PickleShapeError(Exception):
    """The pickle has a shape prep refuses to build; the message says what."""


class _Leaf:
    """A value without members (a number, a string, a callable); one shared instance per kind."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind


class _Node:
    """A container (``tuple``, ``list``, ``dict``) or the result of a call (``object``) and its members.

    ``final`` nodes know their ``depth`` and ``weight`` (the objects a walk over them visits);
    lists and dicts may still grow, so they, and what holds them, are measured at the end."""

    __slots__ = ("depth", "final", "items", "kind", "state", "weight")

    def __init__(self, kind: str, items: list) -> None:
        self.kind = kind
        self.items = items
        self.final = False
        self.state = 0  # while measuring at the end: 0 not yet, 1 on the path, 2 measured
        self.depth = self.weight = 0


_STR, _BYTES, _INT, _FLOAT, _BOOL, _NONE = (_Leaf(k) for k in ("str", "bytes", "int", "float", "bool", "NoneType"))
_GLOBAL = _Leaf("global")
_ENCODE = _Leaf("global")  # _codecs.encode, how protocols 0 to 2 spell bytes: its result is a key like bytes
_ENCODE_ARG = b"_codecs\nencode\n"

# the argument after an opcode: n >= 0 fixed bytes; or one of these
_NL, _NL2, _LEN1, _LEN4, _LEN8 = -1, -2, -3, -4, -5

# opcode byte -> (name, argument, leaf it pushes or None)
_TABLE: dict[str, tuple[str, int, _Leaf | None]] = {
    "(": ("MARK", 0, None),
    ".": ("STOP", 0, None),
    "0": ("POP", 0, None),
    "1": ("POP_MARK", 0, None),
    "2": ("DUP", 0, None),
    "F": ("FLOAT", _NL, _FLOAT),
    "I": ("INT", _NL, _INT),  # also I00 / I01, the booleans of protocol 0
    "J": ("BININT", 4, _INT),
    "K": ("BININT1", 1, _INT),
    "L": ("LONG", _NL, _INT),
    "M": ("BININT2", 2, _INT),
    "N": ("NONE", 0, _NONE),
    "P": ("PERSID", _NL, None),
    "Q": ("BINPERSID", 0, None),
    "R": ("REDUCE", 0, None),
    "S": ("STRING", _NL, _BYTES),  # Python 2 str: bytes under encoding="bytes", as prep reads CIFAR
    "T": ("BINSTRING", _LEN4, _BYTES),
    "U": ("SHORT_BINSTRING", _LEN1, _BYTES),
    "V": ("UNICODE", _NL, _STR),
    "X": ("BINUNICODE", _LEN4, _STR),
    "a": ("APPEND", 0, None),
    "b": ("BUILD", 0, None),
    "c": ("GLOBAL", _NL2, _GLOBAL),
    "d": ("DICT", 0, None),
    "}": ("EMPTY_DICT", 0, None),
    "e": ("APPENDS", 0, None),
    "g": ("GET", _NL, None),
    "h": ("BINGET", 1, None),
    "i": ("INST", _NL2, None),
    "j": ("LONG_BINGET", 4, None),
    "l": ("LIST", 0, None),
    "]": ("EMPTY_LIST", 0, None),
    "o": ("OBJ", 0, None),
    "p": ("PUT", _NL, None),
    "q": ("BINPUT", 1, None),
    "r": ("LONG_BINPUT", 4, None),
    "s": ("SETITEM", 0, None),
    "t": ("TUPLE", 0, None),
    ")": ("EMPTY_TUPLE", 0, None),
    "u": ("SETITEMS", 0, None),
    "G": ("BINFLOAT", 8, _FLOAT),
    "\x80": ("PROTO", 1, None),
    "\x81": ("NEWOBJ", 0, None),
    "\x82": ("EXT1", 1, _GLOBAL),
    "\x83": ("EXT2", 2, _GLOBAL),
    "\x84": ("EXT4", 4, _GLOBAL),
    "\x85": ("TUPLE1", 0, None),
    "\x86": ("TUPLE2", 0, None),
    "\x87": ("TUPLE3", 0, None),
    "\x88": ("NEWTRUE", 0, _BOOL),
    "\x89": ("NEWFALSE", 0, _BOOL),
    "\x8a": ("LONG1", _LEN1, _INT),
    "\x8b": ("LONG4", _LEN4, _INT),
    "B": ("BINBYTES", _LEN4, _BYTES),
    "C": ("SHORT_BINBYTES", _LEN1, _BYTES),
    "\x8c": ("SHORT_BINUNICODE", _LEN1, _STR),
    "\x8d": ("BINUNICODE8", _LEN8, _STR),
    "\x8e": ("BINBYTES8", _LEN8, _BYTES),
    "\x8f": ("EMPTY_SET", 0, None),
    "\x90": ("ADDITEMS", 0, None),
    "\x91": ("FROZENSET", 0, None),
    "\x92": ("NEWOBJ_EX", 0, None),
    "\x93": ("STACK_GLOBAL", 0, None),
    "\x94": ("MEMOIZE", 0, None),
    "\x95": ("FRAME", 8, None),
    "\x96": ("BYTEARRAY8", _LEN8, _Leaf("bytearray")),
    "\x97": ("NEXT_BUFFER", 0, _Leaf("PickleBuffer")),
    "\x98": ("READONLY_BUFFER", 0, None),
}
_NAMES: list[str | None] = [None] * 256
_ARGS: list[int] = [0] * 256
_PUSHES: list[_Leaf | None] = [None] * 256
for _code, (_name, _arg, _leaf) in _TABLE.items():
    _NAMES[ord(_code)], _ARGS[ord(_code)], _PUSHES[ord(_code)] = _name, _arg, _leaf
_REFUSED = {"EMPTY_SET": "a set", "ADDITEMS": "a set", "FROZENSET": "a frozenset", "PERSID": "a persistent id"}
_SKIPPED = frozenset({"PROTO", "FRAME", "READONLY_BUFFER"})


def _error(reason: str) -> PickleShapeError:
    return PickleShapeError(f"UnpicklingError: {reason}")


def _is_key(item: object) -> bool:
    """Whether building a dict may hash ``item``: a str or bytes (or ``_codecs.encode``'s result)."""
    if isinstance(item, _Node):
        return item.kind == "object" and len(item.items) == 2 and item.items[0] is _ENCODE
    return item is _STR or item is _BYTES


def _kind(item: object) -> str:
    return "object" if isinstance(item, _Node) and item.kind == "object" else item.kind  # type: ignore[attr-defined]


def _seen(item: object) -> tuple[int, int]:
    """The depth and weight a container sees in ``item`` (a call's result is one opaque object)."""
    if isinstance(item, _Node) and item.kind != "object":
        return item.depth, item.weight
    return 1, 1


class _Shape:
    """The limits, and the measure of nodes as they become final."""

    def __init__(self) -> None:
        self.pushed = 0
        self.objects_weight = 0  # what every call walks: its arguments and state, in full
        self.pending: list[_Node] = []  # lists, dicts and what holds them: measured at the end

    def limit(self) -> int:
        return EXPANSION * self.pushed + EXPANSION_SLACK

    def measure(self, node: _Node) -> None:
        """``node``'s depth and weight from its members', all of which are final (or opaque)."""
        depth = weight = 0
        for item in node.items:
            item_depth, item_weight = _seen(item)
            if item_depth > depth:
                depth = item_depth
            weight += item_weight
        node.depth, node.weight = depth + 1, weight + 1
        if node.depth > MAX_DEPTH:
            raise PickleShapeError(f"objects nested deeper than {MAX_DEPTH} levels")
        if node.weight > self.limit():
            raise PickleShapeError(f"references that expand to more than {self.limit():,} objects")

    def settle(self, node: _Node) -> None:
        """Measure ``node`` now if its members are final, else at the end."""
        depth = weight = 0
        for item in node.items:
            if type(item) is _Node and item.kind != "object":
                if not item.final:
                    self.pending.append(node)
                    return
                weight += item.weight
                if item.depth > depth:
                    depth = item.depth
            else:
                weight += 1
                depth = depth or 1
        node.depth, node.weight = depth + 1, weight + 1
        if node.depth > MAX_DEPTH:
            raise PickleShapeError(f"objects nested deeper than {MAX_DEPTH} levels")
        if node.weight > EXPANSION * self.pushed + EXPANSION_SLACK:
            raise PickleShapeError(f"references that expand to more than {self.limit():,} objects")
        node.final = True
        if node.kind == "object":
            self.objects_weight += node.weight

    def reopen(self, node: _Node) -> None:
        """``node`` grew after it was measured: measured again, in full, at the end."""
        if node.final:
            node.final = False
            if node.kind == "object":
                self.objects_weight -= node.weight
            self.pending.append(node)

    def grow_object(self, node: _Node, state: object) -> None:
        """BUILD: ``state`` joins the members of the call result ``node``."""
        node.items.append(state)
        if node.final and (not isinstance(state, _Node) or state.final or state.kind == "object"):
            state_depth, state_weight = _seen(state)
            node.depth = max(node.depth, state_depth + 1)
            node.weight += state_weight
            self.objects_weight += state_weight
            if node.depth > MAX_DEPTH:
                raise PickleShapeError(f"objects nested deeper than {MAX_DEPTH} levels")
        else:
            self.reopen(node)

    def finish(self, result: object) -> None:
        """At STOP: measure what is left (cycles refused, without recursion) and check the total."""
        for start in self.pending:
            if start.final or start.state == 2:
                continue
            work = [start]
            while work:
                node = work[-1]
                if node.state == 0:
                    node.state = 1
                    for item in node.items:
                        if isinstance(item, _Node) and not item.final and item.kind != "object":
                            if item.state == 1:
                                raise PickleShapeError("a container that contains itself")
                            if item.state == 0:
                                work.append(item)
                    continue
                work.pop()
                if node.state == 2:
                    continue
                node.state = 2
                self.measure(node)
                if node.kind == "object":
                    self.objects_weight += node.weight
        total = _seen(result)[1] + self.objects_weight
        if total > self.limit():
            raise PickleShapeError(f"references that expand to more than {self.limit():,} objects")


def check_pickle_shape(data: bytes, persistent_ids: bool = False) -> None:
    """Raise :class:`PickleShapeError` unless the pickle ``data`` has a shape that is safe to build
    (see the module's docstring); build nothing. ``persistent_ids`` admits ``BINPERSID`` (how
    ``torch.save`` refers to tensor storages), whose result is opaque like a call's."""
    if not data:
        raise PickleShapeError("EOFError: Ran out of input")
    shape = _Shape()
    stack: list = []
    metastack: list[list] = []
    memo: dict[int, object] = {}
    pos, end = 0, len(data)
    while True:
        if pos >= end:
            raise _error("pickle data was truncated")
        code = data[pos]
        pos += 1
        name = _NAMES[code]
        if name is None:
            shown = chr(code) if 0x20 <= code < 0x7F else f"\\x{code:02x}"
            raise _error(f"invalid load key, '{shown}'.")
        argument = _ARGS[code]
        start = pos
        if argument >= 0:
            pos += argument
        elif argument == _LEN1:
            if pos >= end:
                raise _error("pickle data was truncated")
            pos += 1 + data[pos]
        elif argument in (_LEN4, _LEN8):
            width = 4 if argument == _LEN4 else 8
            size = int.from_bytes(data[pos : pos + width], "little", signed=width == 4)
            if size < 0:
                raise _error(f"{name} pickle has negative byte count")
            pos += width + size
        else:
            for _ in range(1 if argument == _NL else 2):
                newline = data.find(b"\n", pos)
                if newline < 0:
                    raise _error("pickle data was truncated")
                pos = newline + 1
        if pos > end:
            raise _error("pickle data was truncated")

        leaf = _PUSHES[code]
        if leaf is not None:
            stack.append(_ENCODE if leaf is _GLOBAL and data[start:pos] == _ENCODE_ARG else leaf)
        elif name == "BINPUT":
            if not stack:
                raise _error("unpickling stack underflow")
            memo[data[start]] = stack[-1]
            continue
        elif name == "BINGET" or name == "LONG_BINGET" or name == "GET":
            index = data[start] if name == "BINGET" else _index(data[start:pos], name)
            if index not in memo:
                raise _error(f"Memo value not found at index {index}")
            stack.append(memo[index])
        elif name == "MEMOIZE" or name == "LONG_BINPUT" or name == "PUT":
            if not stack:
                raise _error("unpickling stack underflow")
            memo[len(memo) if name == "MEMOIZE" else _index(data[start:pos], name)] = stack[-1]
            continue
        elif name == "MARK":
            metastack.append(stack)
            stack = []
            continue
        elif name == "POP":
            if stack:
                stack.pop()
            elif metastack:
                stack = metastack.pop()
            else:
                raise _error("unpickling stack underflow")
            continue
        elif name in _SKIPPED:
            continue
        elif name in _REFUSED or (name == "BINPERSID" and not persistent_ids):
            raise PickleShapeError(f"{_REFUSED.get(name, 'a persistent id')}, which prep does not read")
        else:
            if name in ("TUPLE", "LIST", "DICT", "APPENDS", "SETITEMS", "OBJ", "INST", "POP_MARK"):
                if not metastack:
                    raise _error("could not find MARK")
                marked, stack = stack, metastack.pop()
            else:
                marked = []
            if name == "STOP":
                shape.finish(_top(stack))
                return
            stack.append(_build(name, stack, marked, shape))
            if stack[-1] is None:
                stack.pop()
                continue
        shape.pushed += 1
        if shape.pushed > MAX_OBJECTS:
            raise PickleShapeError(f"more than {MAX_OBJECTS:,} objects")


def _index(text: bytes, name: str) -> int:
    if name in ("GET", "PUT"):
        try:
            return int(text[:-1])
        except ValueError:
            raise _error(f"{name} with an index that is not a number") from None
    return int.from_bytes(text, "little")


def _pop(stack: list, count: int = 1) -> list:
    if len(stack) < count:
        raise _error("unpickling stack underflow")
    if count == 0:
        return []
    items = stack[-count:]
    del stack[-count:]
    return items


def _check_keys(items: list, name: str) -> None:
    if len(items) % 2:
        raise _error(f"odd number of items for {name}")
    for key in items[0::2]:
        if not _is_key(key):
            raise PickleShapeError(f"a dict key of type {_kind(key)}; only str and bytes keys are read")


_TUPLE_SIZES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3, "EMPTY_TUPLE": 0, "TUPLE": None}


def _build(name: str, stack: list, marked: list, shape: _Shape) -> object:
    """What opcode ``name`` leaves on the stack (None: nothing new), given the items after its MARK."""
    if name in _TUPLE_SIZES:
        size = _TUPLE_SIZES[name]
        node = _Node("tuple", marked if size is None else _pop(stack, size))
        shape.settle(node)
        return node
    if name == "REDUCE" or name == "BINPERSID":
        node = _Node("object", _pop(stack, 2 if name == "REDUCE" else 1))
        shape.settle(node)
        return node
    if name in ("EMPTY_LIST", "LIST", "EMPTY_DICT", "DICT"):
        if name == "DICT":
            _check_keys(marked, name)
        node = _Node("list" if "LIST" in name else "dict", marked)
        shape.pending.append(node)
        return node
    if name in ("APPEND", "APPENDS", "SETITEM", "SETITEMS"):
        items = _pop(stack, 2 if name == "SETITEM" else 1) if name in ("APPEND", "SETITEM") else marked
        if name.startswith("SETITEM"):
            _check_keys(items, name)
        target = _pop(stack)[0]
        if isinstance(target, _Node):
            shape.reopen(target)
            target.items.extend(items)
        stack.append(target)
        return None
    if name == "BUILD":
        state, target = _pop(stack)[0], _pop(stack)[0]
        if isinstance(target, _Node):
            if target.kind == "object":
                shape.grow_object(target, state)
            else:  # the unpickler refuses it (a container has no state); measured anyway
                shape.reopen(target)
                target.items.append(state)
        stack.append(target)
        return None
    if name in ("NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"):
        count = {"NEWOBJ": 2, "NEWOBJ_EX": 3}.get(name)
        node = _Node("object", _pop(stack, count) if count else marked)
        shape.settle(node)
        return node
    if name == "STACK_GLOBAL":
        _pop(stack, 2)
        return _GLOBAL
    if name == "DUP":
        return _top(stack)
    if name == "POP_MARK":
        return None
    raise _error(f"unsupported opcode {name}")  # pragma: no cover - the table lists no other


def _top(stack: list) -> object:
    if not stack:
        raise _error("unpickling stack underflow")
    return stack[-1]
