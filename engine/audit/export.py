"""Export: every record or feedback entry as JSON lines or CSV, streamed, and the one safe way to
write it to a file (a regular file or a new path, replaced atomically)."""
from __future__ import annotations

import codecs
import csv
import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator, Mapping, TextIO

import orjson

from ..errors import AuditError
from .records import COLUMNS, FEEDBACK_COLUMNS, RECORD_FORMAT, V6_ONLY, AuditRecord, FeedbackEntry, canonical_json

#: The columns a format-6 row leaves out when they are empty (as :meth:`.records.AuditRecord.to_dict` does).
V6_OPTIONAL = ("hook_instance", "patient", *V6_ONLY)

if TYPE_CHECKING:
    from .store import AuditLog

EXPORT_FORMATS = ("jsonl", "csv", "fhir-auditevent")
EXPORT_KINDS = ("records", "feedback", "packs")
#: How a record's input and Result are exported: as their texts ("clear"), or as the stored zstd frames, base64
#: ("stored"; JSON lines only: a format-6 record then needs no decompression, and ``--kind packs`` gives the
#: dictionaries that decompress them).
EXPORT_TEXTS = ("clear", "stored")


def export(log: "AuditLog", fmt: str, out: TextIO, *, kind: str = "records",
           progress: Callable[[int], None] | None = None, texts: str = "clear") -> int:
    """Write every record (``kind`` "feedback": every feedback entry; "packs": every stored rule pack) to ``out``
    as JSON lines or CSV, one at a time (memory stays flat); returns how many.

    Texts are exactly as hashed, so that ``record_hash`` can be recomputed from the export
    alone (with ``database_id``, included on every row; feedback rows also hash ``"kind": "feedback"``).
    A format-6 record's row carries ``"record_format": 6``: its hash covers every field but its texts (and the hash),
    which ``input_sha256`` and ``result_sha256`` cover. With ``texts`` "stored", its texts are replaced by
    ``input_zstd`` and ``result_zstd``, its stored bytes in base64 (``stored_sha256`` covers them); records from
    before format 6 keep their texts, which their hash covers.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {EXPORT_FORMATS}")
    if kind not in EXPORT_KINDS:
        raise ValueError(f"kind must be one of {EXPORT_KINDS}")
    if texts not in EXPORT_TEXTS:
        raise ValueError(f"texts must be one of {EXPORT_TEXTS}")
    if texts == "stored" and (fmt != "jsonl" or kind != "records"):
        raise ValueError("stored texts are exported as JSON lines of records (--format jsonl --kind records)")
    if kind == "packs":
        if fmt != "jsonl":
            raise ValueError("packs are exported as JSON lines (--format jsonl)")
        count = 0
        for sha, name, version, files_json in log.stored_packs():
            out.write(canonical_json({"database_id": log.database_id, "sha256": sha, "name": name, "version": version,
                                      "files_json": files_json}) + "\n")
            count += 1
        return count
    if texts == "stored":
        return _export_stored(log, out, progress)
    if fmt == "fhir-auditevent":
        if kind != "records":
            raise ValueError("fhir-auditevent exports the records (their feedback is not an AuditEvent)")
        from .auditevent import audit_event

        count = 0
        for record in log.records():
            out.write(canonical_json(audit_event(record, log.database_id)) + "\n")
            count += 1
            if progress is not None and count % 1000 == 0:
                progress(count)
        return count
    entries: Iterator[AuditRecord | FeedbackEntry] = log.records() if kind == "records" else log.feedback()
    columns = ["database_id", *((*COLUMNS, "record_format") if kind == "records" else FEEDBACK_COLUMNS)]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n") if fmt == "csv" else None
    if writer:
        writer.writeheader()
    binary = _utf8_buffer(out) if writer is None else None
    count = 0
    for rec in entries:
        row = {"database_id": log.database_id, **rec.to_dict(parsed=False)}
        if writer:
            writer.writerow({k: _cell(v) for k, v in row.items()})
        elif binary is not None:
            binary[0].write(_line(row, binary[1]))
        else:
            out.write(canonical_json(row) + "\n")
        count += 1
        if progress is not None and count % 1000 == 0:
            progress(count)
    return count


def _export_stored(log: "AuditLog", out: TextIO, progress: Callable[[int], None] | None) -> int:
    """JSON lines of every record, a format-6 record's texts as their stored bytes (base64), never decompressed."""
    import base64

    count = 0
    for row in log.stored_rows():
        values = dict(zip(COLUMNS, row))
        if values["result_sha256"] is None:  # before format 6: the hash covers the texts themselves
            data = {"database_id": log.database_id, **log._record(row).to_dict(parsed=False)}
        else:
            stored_input, stored_result = values.pop("input_json"), values.pop("result_json")
            data = {"database_id": log.database_id, "record_format": RECORD_FORMAT,
                    **{k: v for k, v in values.items() if v is not None or k not in V6_OPTIONAL},
                    "include_draft": bool(values["include_draft"]),
                    "result_zstd": base64.b64encode(_bytes(stored_result)).decode("ascii")}
            if stored_input is not None:
                data["input_zstd"] = base64.b64encode(_bytes(stored_input)).decode("ascii")
        out.write(json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n")
        count += 1
        if progress is not None and count % 1000 == 0:
            progress(count)
    return count


def _utf8_buffer(out: TextIO) -> tuple[BinaryIO, str] | None:
    """``out``'s byte stream and its error handler, once what was written as text is flushed to it, when ``out``
    writes UTF-8 (a file from :func:`write_atomically`, or stdout in a UTF-8 locale); else None (write text)."""
    buffer, encoding = getattr(out, "buffer", None), getattr(out, "encoding", None)
    if buffer is None or not isinstance(encoding, str) or codecs.lookup(encoding).name != "utf-8":
        return None
    out.flush()
    return buffer, out.errors or "strict"


#: Integers up to this size print the same in JCS as in orjson (beyond, JCS prints them as ECMAScript numbers).
_EXACT = 2**53


def _line(row: Mapping[str, Any], errors: str) -> bytes:
    """``canonical_json(row) + "\\n"`` in UTF-8, each string (and null, boolean, exact integer) written by orjson:
    the same bytes (it escapes exactly what ``json.dumps(ensure_ascii=False)`` does, checked over every code
    point), in a quarter of the time over the ~105 KB Result text of a record (70 against 250 µs). ``row``'s
    keys are column names (ASCII: sorted is JCS order); a string orjson refuses (a lone surrogate) is written
    as the text stream would write it."""
    parts = []
    for key in sorted(row):
        value = row[key]
        kind = type(value)
        if kind is str or kind is bool or value is None or (kind is int and abs(value) <= _EXACT):
            try:
                text = orjson.dumps(value)
            except orjson.JSONEncodeError:
                text = json.dumps(value, ensure_ascii=False).encode("utf-8", errors)
        else:  # a float, a large integer, a structure: as canonical_json writes it
            text = canonical_json(value).encode("utf-8", errors)
        parts.append(orjson.dumps(key) + b":" + text)
    return b"{" + b",".join(parts) + b"}\n"


def _bytes(stored: Any) -> bytes:
    """Stored bytes as bytes (a text in their place, which verify reports, by its UTF-8)."""
    return stored.encode("utf-8", "surrogateescape") if isinstance(stored, str) else bytes(stored)


#: What a spreadsheet takes for the start of a formula (OWASP's list), and the apostrophe that neutralises it.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string starting like a formula (``=HYPERLINK(...)`` as a user
    name) gets a leading apostrophe, and so does one already starting with an apostrophe, so that removing one
    leading apostrophe from every cell that has one gives back the exact text (and its hash)."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def output_target(path: str | os.PathLike[str]) -> Path:
    """Where an export may be written: ``path`` (through a symbolic link, its target) when it is a
    regular file or does not exist yet; anything else (a device such as /dev/full, a FIFO, a
    directory, a socket) is refused, because replacing it would lose it or fool its reader."""
    given = Path(path)
    target = Path(os.path.realpath(given))
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        if not target.parent.is_dir():
            raise AuditError.single(f"the directory {target.parent} does not exist", file=str(given),
                                    suggestion="create it, or choose another --output") from None
        return target
    except OSError as exc:
        raise AuditError.single(f"cannot use this output path ({exc.strerror})", file=str(given)) from exc
    if stat.S_ISREG(mode):
        return target
    what = ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")
    through = f" (through the link {given})" if target != given.absolute() else ""
    raise AuditError.single(f"--output {target} is {what}{through}: an export is written only to a regular file or a new path",
                            file=str(given), suggestion="name a new file, or an existing regular file to replace; "
                                                        "to send the export elsewhere, omit --output and redirect stdout")


def write_atomically(path: str | os.PathLike[str], write: Callable[[TextIO], Any]) -> Any:
    """Write a text file through a temporary file in the same directory, then rename it over the
    target: readers see the old file or the whole new one, never half of it. Only a regular file or
    a new path is written (:func:`output_target`); the check is repeated just before the rename."""
    target = output_target(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise AuditError.single(f"cannot write in {target.parent} ({exc.strerror})", file=str(path),
                                suggestion="choose a directory you can write to") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            outcome = write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if output_target(path) != target:
            raise AuditError.single("the output path changed while the export was written", file=str(path))
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise AuditError.single(f"the disk holding {target.parent} is full; could not write the export", file=str(path),
                                    suggestion="free space on that disk, or choose another --output") from exc
        raise AuditError.single(f"could not write the export ({exc.strerror or exc})", file=str(path),
                                suggestion="check that the directory is writable") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return outcome
