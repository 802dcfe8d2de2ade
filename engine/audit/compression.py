"""The stored form of a record's input and result texts.

Format 4 stores each text as one zstd frame compressed against a dictionary made of the record's
stored rule pack: the texts of its files, as the ``packs`` table holds them, concatenated in file
name order (a raw-content dictionary). A Result repeats the rules' titles, summaries, details and
citations, so most of it is found in the pack; anyone holding the log holds the pack, and so can
decompress it (:func:`pack_dictionary` is the whole recipe). zlib (format 3) cannot do this: its
32 KB window reaches neither a 190 KB pack nor repeats across a 97 KB Result.

The hashes are over the texts themselves, never over their stored form. Older rows stay as they
were written and are told apart by their first bytes: a zstd frame starts ``28 B5 2F FD``, a zlib
stream ``78``, and formats 1-2 stored text (a ``str``, never bytes).
"""
from __future__ import annotations

import threading
import zlib
from typing import Any, Callable, Mapping

#: zstd level. On the project's scenarios (bench/audit.py): 3.7 KB a record's texts in about 1.3 ms (zlib
#: took 8.8 KB in 1.9 ms); level 5 takes 0.6 ms but 3.9 KB, which puts the file above 5 KB a record; past 9
#: the time grows sixfold for 1 % less.
LEVEL = 9
#: log2 of the entries of level 9's hash and chain tables (its own: 20 and 19 for a 298 KB dictionary). zstd copies the
#: dictionary's tables into its context for every text over 32 KB (a Result), so their size is paid on every record:
#: with 18, an 80 KB Result compresses in 0.81 ms instead of 1.45 with cold caches (0.55 instead of 0.68 warm), and the
#: scenarios' texts in 0.54 ms instead of 0.71 for 1 % more bytes (4,722 B a record instead of 4,673; issue 21).
TABLE_LOG = 18
#: Level 9's search, changed: the lazy strategy (one step ahead, where level 9 looks two) and matches of 6 bytes
#: or more (level 9's own: 5). On the scenarios' texts, three passes each (issue 21): 0.414 ms a record's texts
#: instead of 0.534, for 4,746 B instead of 4,722 (+0.5 %); the lazy strategy alone 0.430 ms and 4,794 B.
MIN_MATCH = 6
#: The first bytes of a zstd frame (magic number 0xFD2FB528, little-endian).
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Idle compression contexts a codec keeps (about 2 MB each): one per thread compressing at once, up to this many.
IDLE_CONTEXTS = 4
#: A stored text claiming to be larger than this is damaged (a Result is ~100 KB; an input at most 1 MiB).
MAX_TEXT_BYTES = 64 * 1024 * 1024


class UnreadableText(ValueError):
    """A stored text that cannot be turned back into its text (damaged, or its pack is missing)."""


def pack_dictionary(files: Mapping[str, str]) -> bytes:
    """The zstd dictionary of a pack: the UTF-8 of its files' texts, in file name order, concatenated."""
    return "".join(files[name] for name in sorted(files)).encode("utf-8")


def compression_parameters(dict_size: int) -> Any:
    """The zstd parameters every stored text is compressed with (:data:`LEVEL`, :data:`TABLE_LOG`,
    :data:`MIN_MATCH`, the lazy strategy), with the content size (to check before allocating) and a checksum (damage
    is named as such) in every frame. Reading needs none of them: a frame and the dictionary are enough."""
    import zstandard

    return zstandard.ZstdCompressionParameters.from_level(
        LEVEL, dict_size=dict_size, hash_log=TABLE_LOG, chain_log=TABLE_LOG, min_match=MIN_MATCH,
        strategy=zstandard.STRATEGY_LAZY, write_checksum=True, write_content_size=True)


class PackCodec:
    """Compresses and decompresses texts against one pack's dictionary (safe across threads).

    Threads compress at once, each in a zstd context of its own (the digested dictionary is shared, read-only;
    zstd releases the GIL): every context gives the same bytes."""

    def __init__(self, files: Mapping[str, str]) -> None:
        import zstandard

        self._zstd = zstandard
        raw = pack_dictionary(files)
        dictionary = zstandard.ZstdCompressionDict(raw, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        params = compression_parameters(len(raw))
        dictionary.precompute_compress(compression_params=params)
        self._params, self._dictionary = params, dictionary
        self._idle: list[Any] = []  # compressors not in use (list.pop and append are atomic)
        self._decompressor = zstandard.ZstdDecompressor(dict_data=dictionary)
        self._lock = threading.Lock()  # the decompressing context serves one call at a time

    def compress(self, text: str) -> bytes:
        """The stored form of ``text``: one zstd frame."""
        data = text.encode("utf-8")
        try:
            compressor = self._idle.pop()
        except IndexError:
            compressor = self._zstd.ZstdCompressor(compression_params=self._params, dict_data=self._dictionary)
        try:
            return compressor.compress(data)
        finally:
            if len(self._idle) < IDLE_CONTEXTS:
                self._idle.append(compressor)

    def decompress(self, blob: bytes) -> str:
        """The text of a zstd frame made by :meth:`compress`; :class:`UnreadableText` if it is damaged."""
        zstd = self._zstd
        try:
            size = zstd.frame_content_size(blob)
            if size < 0 or size > MAX_TEXT_BYTES:
                raise UnreadableText(f"the zstd frame declares {'no' if size < 0 else size} content size")
            with self._lock:
                data = self._decompressor.decompress(blob)
            return data.decode("utf-8")
        except zstd.ZstdError as exc:
            raise UnreadableText(f"damaged zstd frame ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise UnreadableText("not UTF-8 text once decompressed") from exc


def decode(stored: Any, codec: Callable[[], PackCodec]) -> str | None:
    """The text of a stored input or result, whatever its format: zstd against the pack's
    dictionary (``codec()`` gives it, read only when needed), zlib, or plain text.
    Raises :class:`UnreadableText` when it cannot be read."""
    if stored is None or isinstance(stored, str):
        return stored
    blob = bytes(stored)
    if blob.startswith(ZSTD_MAGIC):
        return codec().decompress(blob)
    if blob[:1] == b"\x78":
        try:
            return zlib.decompress(blob).decode("utf-8")
        except zlib.error as exc:
            raise UnreadableText(f"damaged zlib stream ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise UnreadableText("not UTF-8 text once decompressed") from exc
    raise UnreadableText("neither a zstd frame nor a zlib stream (its first bytes are " + blob[:4].hex(" ") + ")")
