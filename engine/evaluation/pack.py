"""Load a rule pack directory once: parse, validate, check, and build the model.

Every problem in every file is collected (best first per file) and raised together
as one :class:`~pressor.engine.errors.RuleFileError`, before any patient is seen.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from ..errors import InputError, Problem, RuleFileError, close_matches
from .dosing_load import load_dosing
from .load import Document, load_document
from ..model import Rule, RulePack
from . import parameters
from .pack_decisions import DecisionSections
from .pack_facts import FactSections
from .pack_rules import RuleSections, expand_scope_rules
from .validate import STATE_SCHEMA, schema_problems

RULE_SCHEMA = "rule-file.schema.json"


def default_rules_dir() -> Path:
    """The bundled pack (``pressor.rules``)."""
    from ... import rules

    return Path(rules.DIR)


def rule_files(directory: Path) -> list[Path]:
    """The pack's YAML files, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_pack(directory: str | Path | None = None, *, check_examples: bool = False,
              profile: str | Path | None = None, cache: bool = True) -> RulePack:
    """Load, validate and check the pack in ``directory`` (default: the bundled rules).

    ``profile`` is a site profile file overriding parameter values within their ranges
    (:mod:`.parameters`); parameters are resolved to constants before anything compiles.
    ``cache=False`` loads from the files without the pack cache: for a directory that is never loaded
    again (a stored pack written to a temporary directory), whose entry would only push useful ones out.
    Raises :class:`RuleFileError` listing every problem found (a bad profile: :class:`InputError`).
    Warnings (for example citations of references the source does not list) are kept on ``pack.warnings``.
    """
    directory = Path(directory) if directory is not None else default_rules_dir()
    if not directory.is_dir():
        raise InputError.single("rule directory not found", file=str(directory), suggestion="pass --rules DIR")
    files = rule_files(directory)
    if not files:
        raise RuleFileError.single("no .yaml rule files in the directory", file=str(directory))
    if check_examples or not cache:
        return _Builder(directory, files, check_examples, profile).build()
    return _load_cached(directory, files, profile)


def _load_cached(directory: Path, files: list[Path], profile: str | Path | None) -> RulePack:
    """The pack from the pack cache (keyed by the SHA-256 of its files and of the site profile, see
    :mod:`.pack_cache`), else built and stored."""
    from . import pack_cache

    try:
        inputs = [(_label(p), p.read_bytes()) for p in files]
        if profile is not None:
            inputs.append((f"site profile {profile}", Path(profile).read_bytes()))
        key = pack_cache.pack_key(str(directory), inputs)
    except OSError:  # an unreadable file: the builder reports it with its location
        return _Builder(directory, files, False, profile).build()
    pack = pack_cache.in_memory(key)
    if pack is not None:
        return pack
    pack = pack_cache.get(key)
    if pack is None:
        pack = _Builder(directory, files, False, profile).build()
        pack_cache.put(key, pack)
    else:
        from .evaluate import prepare

        prepare(pack)
    pack_cache.remember(key, pack)
    return pack


def _label(path: Path) -> str:
    """How a rule file is named in messages: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

class _Builder(RuleSections, FactSections, DecisionSections):
    """One pass over a pack directory: every section read, every problem collected, then the pack built."""

    # -- entry ----------------------------------------------------------------
    def build(self) -> RulePack:
        manifest: dict[str, str] = {}
        loaded: list[Document] = []
        for path in self.files:
            label = _label(path)
            try:
                doc = load_document(path, label=label)
            except InputError as exc:
                self.problems.extend(exc.problems)
                continue
            manifest[path.name] = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
            if not isinstance(doc.data, dict):
                self.problems.append(Problem("a rule file must be a mapping", **doc.where("")))
                continue
            loaded.append(doc)
        params = parameters.declared(loaded, self.problems)
        profile = None
        if self.profile_path is not None:
            params, profile = parameters.load_profile(self.profile_path, params)
        for doc in loaded:
            parameters.resolve(doc, params, self.problems)
            found = schema_problems(doc, RULE_SCHEMA)
            self.problems.extend(found)
            if not found:
                self.docs.append(doc)
        if self.problems:
            raise RuleFileError(self.problems)

        pack_doc, pack_meta = self._single("pack")
        refs_doc, refs_meta = self._single("references")
        self._raise_if_problems()
        references = self._references(refs_doc, refs_meta)
        for doc, items in self._sections("parameters"):
            for i, item in enumerate(items):
                self._citations(doc, f"/parameters/{i}/citations", item["citations"], references, item["name"], False)
        dosing = load_dosing(self._sections("dosing"), self.vocab, self.problems,
                             lambda doc, ptr, data: self._citations(doc, ptr, data, references, "dosing", False))
        derived = self._derived(references, dosing)
        derived_types = {d.name: d.type for d in derived}
        declared_roles = {k: v for _, data in self._sections("dosing")[:1] for k, v in data.get("facts", {}).items()}
        for role, fact in declared_roles.items():
            if fact.startswith("derived.") and derived_types.get(fact) != ("boolean" if role == "pediatric" else "number"):
                self.problems.append(Problem(f"dosing fact '{role}' names '{fact}', which is not a derived fact of that type",
                                             fact_path=fact, file="dosing", suggestion="declare it under derived:"))
        preparations = self._preparations(references)
        rules = expand_scope_rules(self._rules(references, {p.drug for p in preparations}, refs_meta["document"]))
        self._supersedes(rules)
        decisions = self._decisions({r.id for r in rules})
        bans = self._bans({r.id for r in rules})
        question_relevance = self._question_relevance()
        waivers = self._waivers({r.id for r in rules}, {d.id for d in decisions})
        absent_means = self._absent_means()
        temporal = self._temporal(references)
        self._raise_if_problems()
        if self.check_examples:
            self._examples()
            self._raise_if_problems()
        pack_sha = pack_sha256(manifest)
        pack = RulePack(
            name=pack_meta["name"], version=pack_meta["version"], title=pack_meta["title"],
            sha256=pack_sha, directory=str(self.directory), rules=tuple(rules), derived=tuple(derived),
            preparations=tuple(preparations), references=references, document=dict(refs_meta["document"]),
            files=manifest, warnings=tuple(self.warnings), raw_pack=dict(pack_meta),
            array_members={p: ft.values for p, ft in self.vocab.items() if ft.kind == "array"},
            decisions=tuple(decisions), bans=tuple(bans), question_relevance=tuple(question_relevance),
            waivers=tuple(waivers), absent_means=tuple(absent_means),
            temporal=tuple(temporal), parameters=tuple(params.values()), profile=profile,
            dosing=dosing,
        )
        self._engine_check(pack)
        return pack

    # -- examples and engine --------------------------------------------------
    def _examples(self) -> None:
        from .validate import _semantic_problems

        for doc, items in self._sections("rules"):
            for i, item in enumerate(items):
                for j, ex in enumerate(item.get("examples", [])):
                    base = ("rules", i, "examples", j, "state")
                    found = schema_problems(doc, STATE_SCHEMA, base=base, data=ex["state"])
                    if not found:
                        found = [Problem(p.message, suggestion=p.suggestion, **doc.where("/" + "/".join(map(str, base)) + (p.pointer or "")))
                                 for p in _semantic_problems(ex["state"], None)]
                    self.problems.extend(replace(p, rule_id=item["id"]) for p in found)

    def _engine_check(self, pack: RulePack) -> None:
        """Build the engine now, so that anything it refuses fails at load time."""
        from .evaluate import prepare

        try:
            prepare(pack)
        except RuleFileError as exc:  # a refusal not predicted in _rules: locate it at its rule
            located = []
            for p in exc.problems:
                if p.rule_id in self.located and p.file is None:
                    where, base = self.located[p.rule_id]
                    p = replace(p, **where(f"{base}/when"))
                located.append(p)
            raise RuleFileError(located) from exc


def find_rule(pack: RulePack, rule_id: str) -> Rule:
    """The rule with this id, or an :class:`InputError` naming the closest id."""
    try:
        return pack.rule(rule_id)
    except KeyError:
        close = close_matches(rule_id, [r.id for r in pack.rules], n=1)
        raise InputError.single(f"no rule '{rule_id}' in {pack.name}", file=pack.directory,
                                suggestion=f"did you mean '{close[0]}'?" if close else "see 'pressor rules list'") from None


def pack_sha256(manifest: dict[str, str]) -> str:
    """The pack's identity: SHA-256 over ``name\\0sha256\\n`` of its files, sorted by name."""
    return hashlib.sha256("".join(f"{name}\0{digest}\n" for name, digest in sorted(manifest.items())).encode()).hexdigest()
