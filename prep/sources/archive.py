"""Zip and tar archives, one or several (WebDataset shards), read by workers without extracting.

Two rules pick the images from an archive's members (:mod:`.members` lists them safely):

* **files**, for one archive: as a folder's files: every member with an image extension
  (:data:`~prep.sources.folder.IMG_EXTENSIONS`) is an image, the others are skipped as ``not an
  image file extension``. The statistics equal those of the extracted folder, bit for bit.
* **samples**, for WebDataset shards (several archives, a brace range, a directory of shards, or
  ``key`` given): members sharing a *key* (the path up to the first dot of the file name:
  ``0001.seg.png`` has key ``0001`` and extension ``seg.png``) form a sample, and a sample's
  image is its member with an image extension, or with extension ``key`` when ``key`` is given.
  A sample without one is skipped (``no image member``, ``no 'jpg' member``); a sample with
  several and no ``key`` is an error asking for one. Other members (labels, JSON) are not listed.

Order: the shards in the order given; in a zip or uncompressed tar the images sorted by name, as
a folder's; in a compressed tar (gzip, bzip2, xz) in archive order, since such a stream can only
be read front to back. Tasks never span two archives, so whole shards can be assigned to ranks.

Reading: a zip or uncompressed tar is opened by each worker, which reads its chunk's members
directly (a tar member at the data offset the listing recorded). A compressed tar is
decompressed once more, front to back, by the main process as the pass asks for tasks, and the
member bytes go to the workers with the task: two decompressions in all (listing and reading),
never one per chunk.

Names in skipped lists are ``<archive file name>:<member>`` (``data.zip:cls/a.jpg``); messages
under ``strict`` give the archive's whole path. The fingerprint is each archive's file name,
size, modification time and member listing (names and sizes), and the rule used.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prep.errors import SourceError, os_reason
from prep.sources.archive_members import ARCHIVE_ERRORS, ArchiveListing, Member, list_archive
from prep.sources.archive_readers import InlineReader, TarMemberReader, ZipMemberReader
from prep.sources.base import Classes, FileChunk, FileReader, FirstFolder, TaskSource, chunk_ranges
from prep.sources.folder import IMG_EXTENSIONS, has_image_extension


@dataclass
class Shard:
    """One archive: its listing, the images to read (in reading order) and what was passed over."""

    listing: ArchiveListing
    images: list[Member] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def sample_key(name: str) -> tuple[str, str]:
    """WebDataset's split of a member name into the sample key and the extension.

    >>> sample_key("train/0001.seg.png"), sample_key("README")
    (('train/0001', 'seg.png'), ('README', ''))
    """
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


class ArchiveSource(TaskSource):
    """The images of the archives ``paths`` (zip, tar, tar.gz/tgz, tar.bz2, tar.xz), in order.

    ``samples``: read WebDataset samples instead of files (implied by ``key``). ``key``: the
    extension of a sample's image (``"jpg"``) when samples have several. ``path``: what the
    stats file records and messages name (a brace pattern, a directory); default the one path.
    ``split``: of one archive of files laid out as ``ImageFolder``'s split folders (``train/``,
    ``val/``, ``test/``, at the top or under one top folder), only the members of that split.
    """

    path: str  # always a file or folder here

    def __init__(
        self,
        paths: Sequence[str],
        *,
        samples: bool = False,
        key: str | None = None,
        path: str | None = None,
        kind: str | None = None,
        split: str | None = None,
    ) -> None:
        if not paths:
            raise SourceError(f"{path or 'archives'}: no archives to read")
        if split and (samples or key or len(paths) > 1):
            raise SourceError(f"{path or paths[0]}: splits are folders of one archive of files; got --split {split}")
        super().__init__(path or paths[0], split)
        self.paths = [os.fspath(p) for p in paths]
        self.key = key.lstrip(".") if key else None
        self.samples = samples or self.key is not None
        self.kind = kind or ("webdataset" if self.samples else "archive")
        self._shards: list[Shard] | None = None
        self._fingerprint: dict | None = None

    @property
    def shards(self) -> list[Shard]:
        if self._shards is None:
            self._shards = [self._select(list_archive(p)) for p in self.paths]
        return self._shards

    def _select(self, listing: ArchiveListing) -> Shard:
        shard = Shard(listing, skipped=list(listing.skipped))
        if self.split:
            prefix = split_prefix(listing, self.split)
            shard.skipped = [(name, why) for name, why in shard.skipped if name.partition(":")[2].startswith(prefix)]
            listing = ArchiveListing(
                **{**vars(listing), "members": [m for m in listing.members if m.name.startswith(prefix)]}
            )
            shard.listing = listing
        if self.samples:
            self._select_samples(shard)
        else:
            for member in listing.members:
                if has_image_extension(member.name):
                    shard.images.append(member)
                else:
                    shard.skipped.append((listing.display(member.name), "not an image file extension"))
        if listing.random_access:
            shard.images.sort(key=lambda m: m.name)
        shard.skipped.sort()
        return shard

    def _select_samples(self, shard: Shard) -> None:
        listing = shard.listing
        groups: dict[str, list[Member]] = {}
        for member in listing.members:
            groups.setdefault(sample_key(member.name)[0], []).append(member)
        for key, members in groups.items():
            if self.key is not None:
                found = [m for m in members if sample_key(m.name)[1].lower() == self.key.lower()]
                missing = f"no '{self.key}' member"
            else:
                found = [m for m in members if has_image_extension(m.name)]
                missing = "no image member"
            if not found:
                shard.skipped.append((listing.display(key), f"{missing} in the sample"))
            elif len(found) > 1:
                exts = ", ".join(sample_key(m.name)[1] for m in found)
                raise SourceError(
                    f"{listing.path}: sample {key} has several images ({exts}); pass key= (--key) to pick one"
                )
            else:
                shard.images.append(found[0])
        if not listing.random_access:
            shard.images.sort(key=lambda m: m.index)

    def num_images(self) -> int:
        return sum(len(s.images) for s in self.shards)

    def listed_skipped(self) -> list[tuple[str, str]]:
        return [entry for shard in self.shards for entry in shard.skipped]

    def fingerprint(self) -> dict:
        """``{"files", "bytes", "sha256"}``: the images, the archives' total size, and a SHA-256 of
        each archive's file name, size and modification time, its members' names and sizes and
        the rule (files or samples, key)."""
        if self._fingerprint is None:
            digest = hashlib.sha256(f"archive samples={self.samples} key={self.key}\n".encode())
            for shard in self.shards:
                listing = shard.listing
                name = os.path.basename(listing.path)
                digest.update(f"{name}\t{listing.size}\t{listing.mtime_ns}\n".encode("utf-8", "surrogateescape"))
                for m in listing.members:
                    digest.update(f"\t{m.name}\t{m.size}\n".encode("utf-8", "surrogateescape"))
            self._fingerprint = {
                "files": self.num_images(),
                "bytes": sum(s.listing.size for s in self.shards),
                "sha256": digest.hexdigest(),
            }
        return dict(self._fingerprint)

    def classes(self) -> Classes | None:
        """For one archive of files (not WebDataset samples): the classes of ``ImageFolder``'s
        layout, the first folders of its members (``class/file.jpg``, or ``train/class/file.jpg``
        after ``split``), sorted; None for shards of samples."""
        if self.samples or len(self.shards) != 1:
            return None
        (shard,) = self.shards
        listing = shard.listing
        prefix = split_prefix(listing, self.split) if self.split else ""
        names = sorted(
            {m.name[len(prefix) :].split("/", 1)[0] for m in listing.members if "/" in m.name[len(prefix) :]}
        )
        outside = tuple(m.name for m in shard.images if "/" not in m.name[len(prefix) :])
        return Classes(tuple(names), FirstFolder(f"{listing.display('')}{prefix}"), outside)

    def empty_message(self) -> str:
        if self.split:
            return f"split {self.split}: no image members in its folder"
        if self.samples:
            what = f"'{self.key}' members" if self.key else f"image members ({', '.join(IMG_EXTENSIONS)})"
            return f"no samples with {what}"
        return f"no image members found (looked for {', '.join(IMG_EXTENSIONS)})"

    def label(self) -> str:
        name = os.path.basename(os.path.normpath(self.path)) or self.path
        return f"{name} {self.split}" if self.split else name

    def display(self, name: str) -> str:
        """The whole path of a listed or skipped ``name`` (``data.zip:cls/a.jpg`` ->
        ``/data/data.zip:cls/a.jpg``), as messages under ``strict`` give it."""
        archive = name.partition(":")[0]
        folder = next((os.path.dirname(p) for p in self.paths if os.path.basename(p) == archive), "")
        return os.path.join(folder, name)

    sized = True

    def iter_tasks(self, start: int, size: int, max_bytes: int | None = None) -> Iterator[FileChunk]:
        offset = 0
        for shard in self.shards:
            count = len(shard.images)
            if start < offset + count:
                first = max(0, start - offset)
                if shard.listing.random_access:
                    sizes = [m.size for m in shard.images]
                    for i, end in chunk_ranges(sizes, first, size, max_bytes):
                        yield _chunk(shard.listing, shard.images[i:end])
                else:
                    yield from _streamed_chunks(shard, first, size, max_bytes)
            offset += count


def _chunk(listing: ArchiveListing, members: list[Member]) -> FileChunk:
    names = tuple(listing.display(m.name) for m in members)
    reader: FileReader
    if listing.format == "zip":
        reader = ZipMemberReader(listing.path, tuple(zip(names, (m.raw for m in members))))
    else:
        places = ((m.offset, m.size) for m in members)
        reader = TarMemberReader(listing.path, tuple((name, *place) for name, place in zip(names, places)))
    return FileChunk(reader, names)


def _streamed_chunks(shard: Shard, first: int, size: int, max_bytes: int | None = None) -> Iterator[FileChunk]:
    """Chunks of the compressed tar of ``shard`` from its image ``first`` on, read front to back once."""
    listing = shard.listing
    wanted = shard.images[first:]
    changed = SourceError(f"{listing.path}: the archive changed since it was listed")
    batch: list[tuple[str, bytes]] = []
    done = held = 0
    try:
        with tarfile.open(listing.path, "r|*") as tf:
            for index, info in enumerate(tf):
                tf.members.clear()  # type: ignore[attr-defined]  # TarFile keeps every member read otherwise
                if done == len(wanted):
                    break
                member = wanted[done]
                if index < member.index:
                    continue
                if index > member.index or info.name != member.raw or info.size != member.size:
                    raise changed
                fp = tf.extractfile(info)
                data = fp.read() if fp is not None else b""
                if len(data) != member.size:
                    raise changed
                batch.append((listing.display(member.name), data))
                done += 1
                held += len(data)
                if len(batch) == size or (max_bytes is not None and held >= max_bytes):
                    yield FileChunk(InlineReader(listing.path, tuple(batch)), tuple(n for n, _ in batch))
                    batch, held = [], 0
    except ARCHIVE_ERRORS as exc:
        raise SourceError(f"{listing.path}: not a readable tar archive ({exc})") from None
    except OSError as exc:
        raise SourceError(f"{listing.path}: {os_reason(exc)}") from None
    if done < len(wanted):
        raise changed
    if batch:
        yield FileChunk(InlineReader(listing.path, tuple(batch)), tuple(n for n, _ in batch))


MACOS_FORKS = "__MACOSX"  # the folder a Finder zip keeps resource forks in (._name beside each file)


def archive_splits(listing: ArchiveListing) -> tuple[str, ...]:
    """The splits (``train``, ``val``, ``test``, in that order) whose folders ``listing`` holds."""
    from prep.sources.folder import SPLIT_FOLDERS

    found = []
    for split in SPLIT_FOLDERS:
        try:
            split_prefix(listing, split)
        except SourceError:
            continue
        found.append(split)
    return tuple(found)


def split_prefix(listing: ArchiveListing, split: str) -> str:
    """The member-name prefix of ``split``'s folder (``train/``, or ``pets/train/`` when every
    member lies under one top folder), as :func:`~prep.sources.folder.split_folder` finds it.
    macOS's ``__MACOSX/`` folder of resource forks (a zip made by the Finder) is not a top folder."""
    from prep.sources.folder import SPLIT_FOLDERS

    names = next((names for names in SPLIT_FOLDERS.values() if split in names), (split,))
    tops = {m.name.split("/", 1)[0] for m in listing.members if "/" in m.name} - {MACOS_FORKS}
    roots = [""] + ([f"{next(iter(tops))}/"] if len(tops) == 1 else [])
    for root in roots:
        for name in names:
            prefix = f"{root}{name}/"
            if any(m.name.startswith(prefix) for m in listing.members):
                return prefix
    raise SourceError(
        f"{listing.path}: no '{split}' split ({'/'.join(names)} folder at the top of the archive or under its one "
        "top folder)"
    )
