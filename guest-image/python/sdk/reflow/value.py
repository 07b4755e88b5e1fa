"""Message values on the ring: the tagged format of `reflow-ring`'s
`value.rs` (see there for the layout). Decoding returns byte strings as
memoryviews over the input (no copy); anything exposing the buffer protocol
(bytes, bytearray, memoryview, numpy arrays) encodes as bytes.
"""

import struct

__all__ = ["encode", "encode_parts", "decode", "ValueError_", "MAX_DEPTH"]

MAX_DEPTH = 64
NONE, FALSE, TRUE, INT, FLOAT, STR, BYTES, LIST, MAP = range(9)
_I64, _F64, _U32 = struct.Struct("<q"), struct.Struct("<d"), struct.Struct("<I")
# Byte strings at least this long are not copied while encoding: they stay
# references to the caller's buffer until written into the ring slot.
BIG = 4096


class ValueError_(ValueError):
    """Bytes that are not a value, or a value the format cannot carry."""


def encode(value):
    """The encoding of `value` as one bytearray."""
    return bytearray(b"".join(encode_parts(value)))


def encode_parts(value):
    """The encoding of `value` as a list of byte buffers to write one after
    another: small items packed together, byte strings of `BIG` bytes or
    more left as memoryviews of the caller's buffer (so a large payload is
    copied once, straight into the ring slot)."""
    parts = _Parts()
    _encode(value, parts, 0)
    return parts.finish()


class _Parts:
    """A bytearray-like sink that keeps large buffers by reference."""

    def __init__(self):
        self.parts, self.small = [], bytearray()

    def append(self, byte):
        self.small.append(byte)

    def __iadd__(self, data):
        if len(data) >= BIG and isinstance(data, memoryview):
            if self.small:
                self.parts.append(self.small)
                self.small = bytearray()
            self.parts.append(data)
        else:
            self.small += data
        return self

    def finish(self):
        if self.small or not self.parts:
            self.parts.append(self.small)
        return self.parts


def _len(out, n):
    if n > 0xFFFFFFFF:
        raise ValueError_(f"{n} bytes do not fit the format")
    out += _U32.pack(n)


def _encode(v, out, depth):
    if depth > MAX_DEPTH:
        raise ValueError_(f"values nest deeper than {MAX_DEPTH}")
    if v is None:
        out.append(NONE)
    elif v is True:
        out.append(TRUE)
    elif v is False:
        out.append(FALSE)
    elif isinstance(v, int):
        if not -(1 << 63) <= v < (1 << 63):
            raise ValueError_(f"integer {v} does not fit in 64 bits")
        out.append(INT)
        out += _I64.pack(v)
    elif isinstance(v, float):
        out.append(FLOAT)
        out += _F64.pack(v)
    elif isinstance(v, str):
        b = v.encode()
        out.append(STR)
        _len(out, len(b))
        out += b
    elif isinstance(v, dict):
        out.append(MAP)
        _len(out, len(v))
        for k, item in v.items():
            if not isinstance(k, str):
                raise ValueError_(f"map keys are strings, not {type(k).__name__}")
            kb = k.encode()
            _len(out, len(kb))
            out += kb
            _encode(item, out, depth + 1)
    elif isinstance(v, (list, tuple)):
        out.append(LIST)
        _len(out, len(v))
        for item in v:
            _encode(item, out, depth + 1)
    else:
        try:
            view = memoryview(v)
        except TypeError:
            raise ValueError_(f"cannot send a {type(v).__name__}") from None
        if not view.c_contiguous:
            # A strided view (say a numpy slice): gathered into one copy.
            view = memoryview(view.tobytes())
        view = view.cast("B")
        out.append(BYTES)
        _len(out, len(view))
        out += view


def decode(data):
    """Decodes exactly one value; byte strings come back as memoryviews."""
    view = memoryview(data).cast("B")
    value, at = _decode(view, 0, 0)
    if at != len(view):
        raise ValueError_(f"{len(view) - at} bytes follow the value")
    return value


def _need(view, at, n):
    if at + n > len(view):
        raise ValueError_(f"value ends early at byte {at}")


def _decode(view, at, depth):
    _need(view, at, 1)
    tag = view[at]
    at += 1
    if tag == NONE:
        return None, at
    if tag == FALSE:
        return False, at
    if tag == TRUE:
        return True, at
    if tag in (INT, FLOAT):
        _need(view, at, 8)
        (v,) = (_I64 if tag == INT else _F64).unpack_from(view, at)
        return v, at + 8
    if tag in (STR, BYTES):
        _need(view, at, 4)
        (n,) = _U32.unpack_from(view, at)
        at += 4
        _need(view, at, n)
        chunk = view[at : at + n]
        if tag == BYTES:
            return chunk, at + n
        try:
            return str(chunk, "utf-8"), at + n
        except UnicodeDecodeError:
            raise ValueError_(f"string at byte {at} is not UTF-8") from None
    if tag in (LIST, MAP):
        if depth >= MAX_DEPTH:
            raise ValueError_(f"values nest deeper than {MAX_DEPTH}")
        _need(view, at, 4)
        (n,) = _U32.unpack_from(view, at)
        at += 4
        if n > len(view) - at:
            raise ValueError_(f"value ends early at byte {at}")
        if tag == LIST:
            items = []
            for _ in range(n):
                item, at = _decode(view, at, depth + 1)
                items.append(item)
            return items, at
        entries = {}
        for _ in range(n):
            key, at = _decode_key(view, at)
            if key in entries:
                raise ValueError_(f"map key {key!r} appears twice")
            entries[key], at = _decode(view, at, depth + 1)
        return entries, at
    raise ValueError_(f"unknown value tag {tag:#04x} at byte {at - 1}")


def _decode_key(view, at):
    _need(view, at, 4)
    (n,) = _U32.unpack_from(view, at)
    at += 4
    _need(view, at, n)
    try:
        return str(view[at : at + n], "utf-8"), at + n
    except UnicodeDecodeError:
        raise ValueError_(f"map key at byte {at} is not UTF-8") from None
