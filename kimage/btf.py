"""Struct layouts from a vmlinux's `.BTF` section.

Why BTF and not DWARF: a Debian debug vmlinux carries both, but its DWARF is
hundreds of megabytes that pyelftools takes minutes to walk, while `.BTF` is a
few megabytes of fixed-size records that one linear pass indexes. We need only
a handful of facts from it (where `task_struct.stack_canary` is, how big a
`task_struct` is), so this reader knows structs, unions, typedefs and
qualifiers and skips everything else by its record size.

Format facts (Documentation/bpf/btf.rst): a 24-byte header (magic 0xeB9F,
version, flags, hdr_len, type_off, type_len, str_off, str_len); type records
start at hdr_len + type_off, numbered from 1; each is `name_off, info, size|type`
(u32 each) with kind = info bits[28:24], vlen = info bits[15:0], kind_flag =
bit 31, followed by kind-specific data. A struct/union member is `name_off,
type, offset`, where offset is in bits (with kind_flag: bits[23:0] offset,
bits[31:24] bitfield size).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")

# Kinds (btf.rst "BTF Type Encoding")
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD = 1, 2, 3, 4, 5, 6, 7
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19

# Bytes that follow the 12-byte record: (fixed, per vlen item)
_TRAILER = {
    KIND_INT: (4, 0),
    KIND_ARRAY: (12, 0),
    KIND_STRUCT: (0, 12),
    KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8),
    KIND_FUNC_PROTO: (0, 8),
    KIND_VAR: (4, 0),
    KIND_DATASEC: (0, 12),
    KIND_DECL_TAG: (4, 0),
    KIND_ENUM64: (0, 12),
}
_QUALIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class BtfError(ValueError):
    """The section is not BTF we can read, or the asked-for struct/member is not there."""


@dataclass(frozen=True)
class BtfMember:
    name: str
    type_id: int
    bit_offset: int


class Btf:
    """An index of type records: one pass over the section, records decoded on demand."""

    def __init__(self, data: bytes) -> None:
        if len(data) < _HEADER.size:
            raise BtfError("BTF section is shorter than its header")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(data, 0)
        if magic != BTF_MAGIC:
            raise BtfError(f"bad BTF magic {magic:#x} (big-endian BTF is not supported)")
        self._data = data
        self._strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self._offsets: list[int] = [0]  # type id 0 is "void"
        self._by_name: dict[str, list[int]] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info, _ = _TYPE.unpack_from(data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            type_id = len(self._offsets)
            self._offsets.append(pos)
            if kind in (KIND_STRUCT, KIND_UNION) and name_off:
                self._by_name.setdefault(self._string(name_off), []).append(type_id)
            fixed, per_item = _TRAILER.get(kind, (0, 0))
            pos += _TYPE.size + fixed + per_item * vlen

    def _string(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def _record(self, type_id: int) -> tuple[int, int, int, int, int]:
        """(kind, vlen, kind_flag, size_or_type, record offset)."""
        if not 0 < type_id < len(self._offsets):
            raise BtfError(f"BTF type id {type_id} out of range")
        pos = self._offsets[type_id]
        _, info, size_or_type = _TYPE.unpack_from(self._data, pos)
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, size_or_type, pos

    def _strip(self, type_id: int) -> int:
        """Follow typedefs and qualifiers to the underlying type."""
        for _ in range(64):
            kind, _, _, target, _ = self._record(type_id)
            if kind not in _QUALIFIERS:
                return type_id
            type_id = target
        raise BtfError("BTF typedef chain too long")

    def struct_id(self, name: str) -> int:
        """The complete struct/union named `name` (the first one with members, if several)."""
        ids = self._by_name.get(name)
        if not ids:
            raise BtfError(f"no struct {name!r} in BTF")
        for type_id in ids:
            if self._record(type_id)[1]:
                return type_id
        return ids[0]

    def size(self, type_id: int) -> int:
        kind, _, _, size, _ = self._record(self._strip(type_id))
        if kind not in (KIND_STRUCT, KIND_UNION, KIND_INT, KIND_ENUM, KIND_ENUM64, KIND_FLOAT):
            raise BtfError(f"BTF type {type_id} (kind {kind}) has no size field")
        return size

    def members(self, type_id: int) -> list[BtfMember]:
        kind, vlen, kind_flag, _, pos = self._record(self._strip(type_id))
        if kind not in (KIND_STRUCT, KIND_UNION):
            raise BtfError(f"BTF type {type_id} is not a struct or union")
        out = []
        for i in range(vlen):
            name_off, member_type, offset = _TYPE.unpack_from(self._data, pos + _TYPE.size + 12 * i)
            bit_offset = offset & 0xFFFFFF if kind_flag else offset
            out.append(BtfMember(self._string(name_off) if name_off else "", member_type, bit_offset))
        return out

    def _find(self, type_id: int, name: str) -> tuple[int, int] | None:
        """(bit offset, type id) of member `name`, looking through anonymous structs/unions."""
        for member in self.members(type_id):
            if member.name == name:
                return member.bit_offset, member.type_id
            if not member.name:
                inner_kind = self._record(self._strip(member.type_id))[0]
                if inner_kind in (KIND_STRUCT, KIND_UNION):
                    found = self._find(member.type_id, name)
                    if found is not None:
                        return member.bit_offset + found[0], found[1]
        return None

    def offsetof(self, struct_name: str, path: str) -> int:
        """Byte offset of a (dotted) member path, e.g. offsetof("task_struct", "thread_info.flags")."""
        type_id = self.struct_id(struct_name)
        bits = 0
        for part in path.split("."):
            found = self._find(type_id, part)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path!r} (at {part!r})")
            bits += found[0]
            type_id = found[1]
        if bits % 8:
            raise BtfError(f"{struct_name}.{path} is a bitfield")
        return bits // 8

    def sizeof(self, struct_name: str) -> int:
        return self.size(self.struct_id(struct_name))
