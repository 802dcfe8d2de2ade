"""Many patient states evaluated across processes, answered in input order with flat memory.

Input is JSON lines (one state per line) or a directory of state files (YAML or JSON, sorted
by name). States travel to worker processes in chunks; at most ``window`` chunks are in flight,
so memory stays flat however long the input. Each worker loads the pack once (from the pack
cache) and answers every state of a chunk with one JSON line; a state that cannot be read or
is invalid gets an error line of its own and the others are unaffected.

One line per state, in input order::

    {"index": 0, "source": "<stdin>:1", "ok": true, "result": {...result.schema.json...}}
    {"index": 1, "source": "<stdin>:2", "ok": false, "exit_code": 1, "error": "patient_state_error", "problems": [...]}

A timeline input (top-level ``timeline:``) is converted as ``pressor recommend`` converts it: its
``result`` also holds ``facts`` (where each fact's value came from) and the line ``timeline`` (what
the conversion did), as ``pressor recommend --json`` prints them.

``exit_code`` is what ``pressor recommend`` would have exited with for that state alone
(1 invalid input, 4 engine failure).
"""
from __future__ import annotations

import json
import os
import signal
from collections import deque
from datetime import datetime
from pathlib import Path
from dataclasses import dataclass, replace
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator, NamedTuple

from ..errors import EvaluationError, InputError, PressorError
from ..model import Result

if TYPE_CHECKING:
    from .compact import CompactWriter
    from .load import Document

#: States per chunk sent to a worker: large enough to amortise the round trip, small enough to keep memory flat.
CHUNK = 64


class Item(NamedTuple):
    """One input: where it came from (``file`` or ``<stdin>:LINE``), its text, whether it is one JSON line,
    and, if it could not even be read, the error (as JSON-ready data)."""

    source: str
    text: str
    json_line: bool
    unreadable: dict[str, Any] | None = None


@dataclass(frozen=True)
class Answer:
    """One output line (None when a worker wrote it itself: see :func:`evaluate_many`'s ``out``), its state's
    place in the input, and (only when asked, for the audit log) the state and result behind it."""

    line: str | None
    exit_code: int
    index: int
    source: str
    state: Any = None
    result: Result | None = None


def json_lines(stream: IO[str], label: str = "<stdin>") -> Iterator[Item]:
    """Every non-blank line of ``stream`` as an item named ``label:LINE``."""
    for number, line in enumerate(stream, 1):
        if line.strip():
            yield Item(f"{label}:{number}", line, True)


def state_files(directory: Path) -> Iterator[Item]:
    """Every ``.json``/``.yaml``/``.yml`` file of ``directory``, sorted by name (read one at a time)."""
    from .load import read_text

    for path in sorted(p for p in directory.iterdir() if p.suffix in (".json", ".yaml", ".yml") and p.is_file()):
        try:
            text = read_text(path)
        except InputError as exc:
            yield Item(str(path), "", False, exc.to_dict())
            continue
        yield Item(str(path), text, False)


class _Worker:
    """What one process keeps between chunks: the pack and the evaluation settings."""

    def __init__(self, rules_dir: str | None, profile: str | None, now: datetime, include_draft: bool, keep: bool,
                 advice: bool = True, compact: bool = False) -> None:
        from .pack import load_pack

        self.pack = load_pack(rules_dir, profile=profile)
        self.now = now
        self.include_draft = include_draft
        self.keep = keep
        self.advice = advice
        self.compact: CompactWriter | None = None
        if compact:
            from .compact import CompactWriter

            self.compact = CompactWriter()
        from .result_json import ResultWriter

        self.write = ResultWriter()

    def answer(self, index: int, item: Item) -> Answer:
        from .evaluate import evaluate
        from .load import Document, loads_json, parse

        head = {"index": index, "source": item.source}
        if item.unreadable is not None:
            return Answer(_dumps({**head, "ok": False, "exit_code": 1, **item.unreadable}), 1, index, item.source)
        try:
            if item.json_line:  # no positions inside one line: problems name the line and the JSON pointer
                state = loads_json(item.text, file=item.source)
                document = Document(state, item.source)
            else:
                document = parse(item.text, file=item.source, fmt="json" if item.source.endswith(".json") else None)
                state = document.data
            conversion = None
            evaluated: Document | None = document
            if isinstance(state, dict) and "timeline" in state:  # a timeline input, as `pressor recommend` takes it
                from ..ehr.fhir import from_timeline

                conversion = from_timeline(document, now=self.now, pack=self.pack)
                state, evaluated = conversion.state, None
            result = evaluate(self.pack, state, now=self.now, include_draft=self.include_draft, document=evaluated,
                              advice=self.advice)
        except PressorError as exc:
            code = 4 if isinstance(exc, EvaluationError) else 1
            return Answer(_dumps({**head, "ok": False, "exit_code": code, **exc.to_dict()}), code, index, item.source)
        if self.compact is not None:
            line = self._compact_line(self.compact, index, item, result, conversion)
            return Answer(line, 0, index, item.source, state, result) if self.keep else Answer(line, 0, index, item.source)
        text = self.write(result)
        line = f'{{"index":{index},"source":{_dumps(item.source)},"ok":true,"result":'
        if conversion is None:
            line += text + "}"
        else:  # as `pressor recommend --json` shows it: the facts' provenance in the result, the conversion beside
            line += f'{text[:-1]},"facts":{_dumps(conversion.facts)}}},"timeline":{_dumps(conversion.to_dict())}}}'
        return Answer(line, 0, index, item.source, state, result) if self.keep else Answer(line, 0, index, item.source)

    @staticmethod
    def _compact_line(compact: CompactWriter, index: int, item: Item, result: Result, conversion: Any) -> str:
        from .compact import dumps

        defs, data = compact(result)
        line: dict[str, Any] = {"index": index, "source": item.source, "ok": True, "result": data}
        if conversion is not None:
            data["facts"] = conversion.facts
            line["timeline"] = conversion.to_dict()
        text = dumps(line)
        return text if defs is None else dumps({"defs": defs}) + "\n" + text


def _dumps(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


_worker: _Worker | None = None


def _start_worker(*args: Any) -> None:
    global _worker
    _worker = _Worker(*args)
    from .evaluate import freeze_long_lived

    freeze_long_lived()


def _answer_chunk(chunk: list[tuple[int, Item]]) -> list[Answer]:
    assert _worker is not None, "worker process not initialised"
    return [_worker.answer(i, item) for i, item in chunk]


#: Direct output (see evaluate_many's ``out``): the chunk whose turn it is to write, a flag the parent raises
#: when the batch stops, and the condition they are waited on with; inherited by the forked workers.
_turn: Any = None


def _answer_chunk_direct(number: int, fd: int, chunk: list[tuple[int, Item]]) -> list[Answer]:
    """The chunk's lines, written by this worker to ``fd`` when every earlier chunk has been; its answers
    without their lines (the parent only counts them)."""
    answers = _answer_chunk(chunk)
    data = "".join(a.line + "\n" for a in answers if a.line is not None).encode()  # a worker's answers have lines
    turn, stopped, cond = _turn
    with cond:
        while turn.value != number:
            if stopped.value:
                raise RuntimeError("the batch stopped")
            cond.wait(0.5)
        # A stopping pool terminates its workers (SIGTERM): never in the middle of a chunk's lines.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            turn.value = number + 1
            cond.notify_all()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return [replace(a, line=None) for a in answers]


def evaluate_many(items: Iterable[Item], *, rules_dir: str | None, now: datetime, include_draft: bool = False,
                  jobs: int = 1, keep: bool = False, window: int | None = None,
                  profile: str | None = None, advice: bool = True, compact: bool = False,
                  out: int | None = None) -> Iterator[Answer]:
    """An :class:`Answer` per item, in input order, evaluated by ``jobs`` processes.

    ``keep``: answers also carry the state and the :class:`Result` (for the audit log); ``profile``: the
    site profile the pack is loaded with (as ``pressor recommend --profile``); ``advice``: see ``evaluate``;
    ``compact``: lines as compact.py describes (an answer's line may then be a definitions line and its line).
    At most ``window`` chunks (default ``4 * jobs``) of :data:`CHUNK` states are in flight.
    ``out``: with ``jobs`` > 1 (and fork), each worker writes its chunks' lines to this file descriptor itself,
    chunk after chunk in input order, and the answers come back without their lines (``line`` None): the
    lines do not travel through the parent (``keep`` must then be false).
    """
    numbered = enumerate(items)
    if jobs <= 1:
        worker = _Worker(rules_dir, profile, now, include_draft, keep, advice, compact)
        for index, item in numbered:
            yield worker.answer(index, item)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    window = window or 4 * jobs
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    from concurrent.futures.process import BrokenProcessPool

    global _turn
    direct = out is not None and not keep and context.get_start_method() == "fork"
    if direct:
        _turn = (context.Value("q", 0, lock=False), context.Value("b", 0, lock=False), context.Condition())
    chunks = 0

    def submit(pool: Any, chunk: list[tuple[int, Item]]) -> Any:
        nonlocal chunks
        chunks += 1
        if direct:
            return pool.submit(_answer_chunk_direct, chunks - 1, out, chunk)
        return pool.submit(_answer_chunk, chunk)

    try:
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                                 initargs=(rules_dir, profile, now, include_draft, keep, advice, compact)) as pool:
            pending: deque = deque()
            chunk: list[tuple[int, Item]] = []
            try:
                for entry in numbered:
                    chunk.append(entry)
                    if len(chunk) == CHUNK:
                        pending.append(submit(pool, chunk))
                        chunk = []
                        if len(pending) >= window:
                            yield from pending.popleft().result()
                if chunk:
                    pending.append(submit(pool, chunk))
                while pending:
                    yield from pending.popleft().result()
            finally:
                if direct:  # whatever stopped the batch: no worker waits for a turn that will not come
                    _turn[1].value = 1  # a waiting worker sees it within its 0.5 s poll
                    # A worker killed while holding the turn's lock (the pool terminates them) holds it for ever:
                    # wake the others only if it can be had.
                    if _turn[2].acquire(timeout=1.0):
                        try:
                            _turn[2].notify_all()
                        finally:
                            _turn[2].release()
    except BrokenProcessPool as exc:  # a worker died (killed, out of memory, a crash in the engine)
        raise EvaluationError.single(
            "a batch worker process died; the states from the first unanswered one on were not evaluated",
            suggestion="rerun those states; if it happens again, run with --jobs 1 and report it",
        ) from exc


def default_jobs() -> int:
    """The CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
