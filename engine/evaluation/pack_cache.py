"""A cache of loaded, validated packs, so that a command starts without re-validating every rule file.

Loading the bundled pack parses every YAML file and checks it with full JSON Schema (and
imports jsonschema): most of a short command's time. The pack that comes out depends only on
the bytes of its files, where they are (their labels end up in messages), and pressor's own
code; so the finished :class:`~pressor.engine.model.RulePack` is stored under a key that is the
SHA-256 of all of those:

* pressor's version, the Python version, and the SHA-256 of every module and schema that shapes
  a loaded pack (``engine/evaluation/*.py``, ``model.py``, ``rule_pack.py``, ``conditions.py``, ``dosing_policy.py``,
  ``errors.py``, ``schemas/*.json``),
  so a code change, even in an editable install, misses;
* the pack directory as given, and for each file its label and the SHA-256 of its bytes.

Every load re-reads and re-hashes the files, so an edited file is never served stale. A cache
file holds a header (magic, its own name, which is the key, and the SHA-256 of the payload) and a pickle. It is
unpickled only if it is a regular file owned by the current user, writable by no one else, in a
directory writable by no one else, and its key and payload hash match: anyone able to write
there could already run code as this user (the directory is the user's own), and an accidental
or partial write fails the hash. Anything unexpected is a miss, never an error: the pack is
loaded from its files. Files are written to a temporary name and renamed (never half-written);
deleting the directory at any time is safe.

Location: ``$PRESSOR_CACHE_DIR`` if set (``off`` disables the cache), else ``packs/`` in the
user cache directory (``~/.cache/pressor/packs`` on Linux). The patient-state validator that
:mod:`fastjsonschema` generates and the pack's compiled condition code are kept there too, as
marshalled code objects (same checks, keyed by what they are compiled from).
"""
from __future__ import annotations

import hashlib
import json
import marshal
import os
import pickle
import stat
import sys
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from types import CodeType
from typing import Any, Callable, Iterable, Sequence

from .. import __version__
from ..model import RulePack

ENV = "PRESSOR_CACHE_DIR"
_MAGIC = b"pressor-cache 1\n"
_HERE = Path(__file__).resolve().parent


#: Packs kept in this process's memory by key (the warm CLI worker only: see pressor.cli.worker); None: off.
_MEMORY: dict[str, RulePack] | None = None
_MEMORY_SIZE = 0
_MEMORY_LOADS = 0


def keep_in_memory(size: int) -> None:
    """Keep up to ``size`` loaded packs in memory, by the same key as on disk (for a long-lived process that
    forks a child per command: the key is still computed from the files, re-read on every load)."""
    global _MEMORY, _MEMORY_SIZE
    _MEMORY, _MEMORY_SIZE = {}, size


def in_memory(key: str) -> RulePack | None:
    return None if _MEMORY is None else _MEMORY.get(key)


def memory_loads() -> int:
    """How many packs were put in memory so far (a change says a pack was loaded that memory did not hold)."""
    return _MEMORY_LOADS


def remember(key: str, pack: RulePack) -> None:
    global _MEMORY_LOADS
    if _MEMORY is None:
        return
    _MEMORY_LOADS += 1
    _MEMORY.pop(key, None)
    _MEMORY[key] = pack
    while len(_MEMORY) > _MEMORY_SIZE:
        _MEMORY.pop(next(iter(_MEMORY)))


def cache_dir() -> Path | None:
    """Where packs are cached, or None if caching is off."""
    configured = os.environ.get(ENV)
    if configured is not None:
        return None if configured.strip().lower() in ("", "off", "0", "none") else Path(configured)
    import platformdirs

    return Path(platformdirs.user_cache_dir("pressor")) / "packs"


@lru_cache(maxsize=None)
def _code_fingerprint() -> bytes:
    """SHA-256 over the code and schemas that decide what a loaded pack holds."""
    h = hashlib.sha256()
    sources = sorted(_HERE.glob("*.py")) + [_HERE.parent / name for name in ("model.py", "rule_pack.py", "conditions.py", "dosing_policy.py", "errors.py")]
    from ... import schemas as package

    schemas = Path(package.DIR)
    for path in sources + sorted(schemas.glob("*.json")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.digest()


def pack_key(directory: str, labelled_files: Iterable[tuple[str, bytes]]) -> str:
    """The cache key of a pack: its files (label, bytes), its directory, pressor's code and version."""
    h = hashlib.sha256()
    h.update(f"{__version__}\0{sys.version}\0{directory}\0".encode())
    h.update(_code_fingerprint())
    for label, data in labelled_files:
        h.update(f"{label}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    return h.hexdigest()


def _trusted(path: Path) -> bool:
    """A regular file and directory owned by this user and writable by no one else."""
    try:
        info, parent = os.lstat(path), os.stat(path.parent)
    except OSError:
        return False
    uid = os.getuid()
    for st in (info, parent):
        if st.st_uid != uid or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return stat.S_ISREG(info.st_mode)


def _read(name: str) -> bytes | None:
    """The payload of cache entry ``name`` if the file is trusted and its header matches, else None."""
    where = cache_dir()
    if where is None:
        return None
    path = where / name
    if not _trusted(path):
        return None
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    header_end = blob.find(b"\n", len(_MAGIC)) + 1
    header, payload = blob[:header_end], blob[header_end:]
    return payload if header == _header(name, payload) else None


def _header(name: str, payload: bytes) -> bytes:
    return _MAGIC[:-1] + f" {name} {hashlib.sha256(payload).hexdigest()}\n".encode()


def _write(name: str, payload: bytes) -> None:
    """Store an entry atomically (temporary file, then rename); a cache that cannot be written only costs speed."""
    where = cache_dir()
    if where is None:
        return
    import tempfile  # only when writing: with shutil and the compressors it costs ~10 ms of every start

    tmp = None
    try:
        where.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(_header(name, payload) + payload)
        os.replace(tmp, where / name)
        tmp = None
        _prune(where)
    except OSError:
        return
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


#: Entries kept; beyond that the least recently written go (each is ~150 KB; old code and pack versions pile up).
KEEP = 64


def _prune(where: Path) -> None:
    try:
        entries = sorted(where.glob("*.*"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-KEEP]:
            if not old.name.startswith(".tmp-"):
                old.unlink(missing_ok=True)
    except OSError:
        pass  # another process pruned first, or the directory went: nothing to keep tidy


def get(key: str) -> RulePack | None:
    """The cached pack for ``key``, or None (missing, untrusted, stale, corrupt: the caller loads the files)."""
    payload = _read(f"{key}.pack")
    if payload is None:
        return None
    try:
        pack = pickle.loads(payload)  # noqa: S301 - trusted: own file in own directory, key and hash checked
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError, IndexError):
        return None
    return pack if isinstance(pack, RulePack) else None


def put(key: str, pack: RulePack) -> None:
    """Store ``pack`` under ``key``, with the plain data of its ``cache`` and none of its runtime objects
    (:meth:`.memo.PackMemo.kept`)."""
    _write(f"{key}.pack", pickle.dumps(replace(pack, cache=pack.cache.kept()), protocol=pickle.HIGHEST_PROTOCOL))


def compiled_code(source: str, filename: str) -> CodeType:
    """``compile(source, filename, "exec")``, kept marshalled in the cache under the SHA-256 of the source.

    The pack's generated condition code costs ~10-20 ms to compile and ~1 ms to load from here.
    """
    return compiled_codes([source], filename)[0]


def compiled_codes(sources: Sequence[str], filename: str) -> tuple[CodeType, ...]:
    """Each source compiled separately (:func:`compiled_code`), kept together in one cache entry.

    Compiling a big pack's conditions as one module held ~140 MB at once (3,000 rules, 1.3 MB of source):
    its parts, compiled one after the other, need a fraction of that.
    """
    # Python source holds no NUL byte (compile refuses one), so the joined key is unambiguous.
    # ".codes": a tuple of code objects (before, ".code" held one code object under the same hash)
    name = hashlib.sha256(f"{sys.version}\0{filename}\0{chr(0).join(sources)}".encode()).hexdigest() + ".codes"
    payload = _read(name)
    if payload is not None:
        try:
            found = marshal.loads(payload)
        except (EOFError, ValueError, TypeError):
            found = None
        if isinstance(found, tuple) and len(found) == len(sources) and all(isinstance(c, CodeType) for c in found):
            return found
    codes = tuple(compile(source, filename, "exec") for source in sources)
    _write(name, marshal.dumps(codes))
    return codes


def state_validator(definition: dict[str, Any]) -> Callable[[Any], Any]:
    """``fastjsonschema.compile(definition)``, with the generated code kept compiled in the cache.

    Generating the validator costs ~20 ms per start; loading its marshalled code object, ~1 ms.
    The entry is keyed by the schema's text, fastjsonschema's version, Python's and pressor's.
    """
    import fastjsonschema

    material = json.dumps(definition, sort_keys=True) + f"\0{fastjsonschema.VERSION}\0{sys.version}\0{__version__}"
    name = hashlib.sha256(material.encode()).hexdigest() + ".validator"
    payload = _read(name)
    code: CodeType | None = None
    entry = b""
    if payload is not None:
        entry, _, body = payload.partition(b"\n")
        try:
            code = marshal.loads(body)
        except (EOFError, ValueError, TypeError):
            code = None
    if code is None:
        from fastjsonschema.ref_resolver import RefResolver

        source = fastjsonschema.compile_to_code(definition)
        code = compile(source, "<patient-state validator>", "exec")
        entry = RefResolver.from_schema(definition, store={}).get_scope_name().encode()
        _write(name, entry + b"\n" + marshal.dumps(code))
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - fastjsonschema's own output for our bundled schema
    return namespace[entry.decode()]
