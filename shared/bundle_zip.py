"""The stored zip a bundle is: a bounded reader that never inflates, and the writer.

``ZipIndex.parse(data)`` reads only the zip's structure — the end record, the central
directory and each member's local header — and checks every rule before any member's bytes
are touched; ``index.read(name)`` then copies one member out. The standard ``zipfile``
module would build an object per central-directory entry before any check and inflate
whatever a member claims to be, which is how a 306 KB file cost 300 MB.

Rules (each breach raises its own ``BundleError``):

    the file ends with the end record, no comment, nothing appended  BundleLayoutError
    no zip64, no multi-disk, no encryption, no data descriptors      BundleLayoutError
    at most ``MAX_MEMBERS`` entries                                  BundleLimitError
    every member stored (method 0), sizes equal                      BundleCompressedError
    names are plain file names (no folders), each used once          BundleLayoutError
    members are contiguous from byte 0 to the central directory,     BundleLayoutError
    which runs exactly to the end record (no gaps, no overlaps)
    a missing end record (a cut-off download)                        BundleTruncatedError

Memory: the reader holds the bundle bytes it was given plus the members it copied; since
members cannot overlap, that is at most twice the bundle.
"""
from __future__ import annotations

import io
import re
import struct
import zipfile
from dataclasses import dataclass

from shared.errors import (BundleCompressedError, BundleLayoutError, BundleLimitError, BundleTruncatedError,
                           NotABundleError)

MAX_MEMBERS = 16
LOCAL_MAGIC = b"PK\x03\x04"
_EOCD = struct.Struct("<4s4H2LH")            # end of central directory record (22 bytes)
_CENTRAL = struct.Struct("<4s6H3L5H2L")      # central directory entry (46 bytes + name, extra, comment)
_LOCAL = struct.Struct("<4s5H3L2H")          # local file header (30 bytes + name, extra)
_EOCD_MAGIC, _CENTRAL_MAGIC = b"PK\x05\x06", b"PK\x01\x02"
_ZIP64 = 0xFFFFFFFF
_ENCRYPTED, _DATA_DESCRIPTOR = 0x1, 0x8
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FIXED_DATE = (2020, 1, 1, 0, 0, 0)  # same inputs, same bundle bytes


def plain_name(name: str) -> bool:
    """A member name a bundle may use: a plain file name of safe characters (no folders)."""
    return isinstance(name, str) and bool(_NAME_RE.fullmatch(name)) and ".." not in name


@dataclass(frozen=True)
class Member:
    name: str
    header_offset: int
    data_offset: int
    size: int

    @property
    def end(self) -> int:
        return self.data_offset + self.size


class ZipIndex:
    """The checked layout of a stored zip; members are read one at a time on request."""

    def __init__(self, data: bytes, members: dict[str, Member], label: str):
        self._data = data
        self.members = members
        self.label = label

    def __contains__(self, name: str) -> bool:
        return name in self.members

    @property
    def names(self) -> list[str]:
        return list(self.members)

    def size(self, name: str) -> int:
        return self.members[name].size

    def read(self, name: str, limit: int | None = None) -> bytes:
        """A copy of one member's bytes; ``limit`` refuses a larger member before copying."""
        m = self.members[name]
        if limit is not None and m.size > limit:
            raise BundleLimitError(f"{self.label}: {name} is {m.size} bytes, more than the {limit} a bundle's "
                                   f"{name} may have; this is not a bundle `harken model train` wrote")
        return self._data[m.data_offset:m.end]

    @classmethod
    def parse(cls, data: bytes, label: str) -> "ZipIndex":
        if data[:4] != LOCAL_MAGIC:
            if not data:
                raise BundleTruncatedError(f"{label} is empty: the download did not finish; fetch it again")
            raise NotABundleError(f"{label} is not a Harken bundle (no zip header); pass the .hkb file "
                                  "`harken model train` wrote")
        count, cd_offset, cd_end = _end_record(data, label)
        members = _central_directory(data, cd_offset, cd_end, count, label)
        _check_local_headers(data, members, cd_offset, label)
        return cls(data, members, label)


def _end_record(data: bytes, label: str) -> tuple[int, int, int]:
    """(entry count, central directory offset, its end) from the end record, which must end the file."""
    eocd_at = len(data) - _EOCD.size
    if eocd_at < 0 or data[eocd_at:eocd_at + 4] != _EOCD_MAGIC:
        found = data.rfind(_EOCD_MAGIC, max(0, len(data) - 65557))
        if found >= 0 and found + _EOCD.size <= len(data):
            raise BundleLayoutError(f"{label} has {len(data) - found - _EOCD.size} bytes after the end of its zip "
                                    "(a comment or appended data); use the bundle file as it was built")
        raise BundleTruncatedError(f"{label} is truncated: the end of the zip is missing; fetch it again")
    _, disk, cd_disk, on_disk, count, cd_size, cd_offset, comment = _EOCD.unpack_from(data, eocd_at)
    if comment:
        raise BundleLayoutError(f"{label} carries a zip comment; bundles have none, use the file as it was built")
    if disk or cd_disk or on_disk != count:
        raise BundleLayoutError(f"{label} is a multi-part zip; a bundle is one file")
    if count == 0xFFFF or cd_size == _ZIP64 or cd_offset == _ZIP64:
        raise BundleLayoutError(f"{label} is a zip64 archive; bundles are small stored zips")
    if count > MAX_MEMBERS:
        raise BundleLimitError(f"{label} has {count} members; a bundle has at most {MAX_MEMBERS}")
    if cd_offset + cd_size != eocd_at:
        raise BundleLayoutError(f"{label}: its central directory does not end where its end record starts; "
                                "the file is damaged, fetch it again")
    return count, cd_offset, eocd_at


def _central_directory(data: bytes, pos: int, end: int, count: int, label: str) -> dict[str, Member]:
    members: dict[str, Member] = {}
    for _ in range(count):
        if pos + _CENTRAL.size > end or data[pos:pos + 4] != _CENTRAL_MAGIC:
            raise BundleLayoutError(f"{label}: its central directory is damaged; fetch the bundle again")
        (_, _made, _need, flags, method, _t, _d, _crc, csize, usize, nlen, elen, clen, disk, _ia, _ea,
         offset) = _CENTRAL.unpack_from(data, pos)
        name_at = pos + _CENTRAL.size
        pos = name_at + nlen + elen + clen
        if pos > end:
            raise BundleLayoutError(f"{label}: its central directory is damaged; fetch the bundle again")
        name = _decode_name(data[name_at:name_at + nlen], label)
        if method != zipfile.ZIP_STORED:
            raise BundleCompressedError(f"{label}: member {name} is compressed (method {method}); bundles are "
                                        "stored zips whose members are never inflated: rebuild it with "
                                        "`harken model train` (or `zip -0`)")
        if flags & (_ENCRYPTED | _DATA_DESCRIPTOR) or disk:
            raise BundleLayoutError(f"{label}: member {name} is encrypted, streamed or on another disk; "
                                    "rebuild the bundle with `harken model train`")
        if _ZIP64 in (csize, usize, offset):
            raise BundleLayoutError(f"{label}: member {name} uses zip64 sizes; bundles are small stored zips")
        if csize != usize:
            raise BundleLayoutError(f"{label}: member {name} claims {usize} bytes stored in {csize}; a stored "
                                    "member's sizes are equal, the file was altered")
        if name in members:
            raise BundleLayoutError(f"{label}: member {name} appears twice; a bundle names each member once")
        members[name] = Member(name, offset, -1, usize)
    if pos != end:
        raise BundleLayoutError(f"{label}: its central directory holds more than its {count} entries")
    return members


def _decode_name(raw: bytes, label: str) -> str:
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        name = None
    if name is None or not plain_name(name):
        raise BundleLayoutError(f"{label}: member name {raw[:80]!r} is not a plain file name "
                                "(A-Z a-z 0-9 . _ -, no folders); this is not a bundle Harken wrote")
    return name


def _check_local_headers(data: bytes, members: dict[str, Member], cd_offset: int, label: str) -> None:
    """Fill each member's data offset; members must tile bytes 0..cd_offset exactly."""
    expected = 0
    for m in sorted(members.values(), key=lambda m: m.header_offset):
        if m.header_offset != expected:
            what = "overlaps another" if m.header_offset < expected else "leaves unexplained bytes before it"
            raise BundleLayoutError(f"{label}: member {m.name} {what}; the file was altered, use the original")
        at = m.header_offset
        if at + _LOCAL.size > cd_offset or data[at:at + 4] != LOCAL_MAGIC:
            raise BundleLayoutError(f"{label}: the local header of {m.name} is missing or damaged")
        _, _need, flags, method, _t, _d, _crc, _cs, _us, nlen, elen = _LOCAL.unpack_from(data, at)
        name_at = at + _LOCAL.size
        if data[name_at:name_at + nlen] != m.name.encode() or method != zipfile.ZIP_STORED or flags & _ENCRYPTED:
            raise BundleLayoutError(f"{label}: the local header of {m.name} disagrees with the central directory; "
                                    "the file was altered, use the original")
        start = name_at + nlen + elen
        if start + m.size > cd_offset:
            raise BundleLayoutError(f"{label}: member {m.name} runs past the central directory")
        members[m.name] = Member(m.name, m.header_offset, start, m.size)
        expected = start + m.size
    if expected != cd_offset:
        raise BundleLayoutError(f"{label} has bytes between its last member and its central directory; "
                                "the file was altered, use the original")


def write_stored_zip(members: list[tuple[str, bytes]]) -> bytes:
    """A stored zip of ``members`` in order, with a fixed timestamp (same inputs, same bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            if not plain_name(name):
                raise ValueError(f"member name {name!r} is not a plain file name")
            zf.writestr(zipfile.ZipInfo(name, date_time=FIXED_DATE), data)
    return buf.getvalue()
