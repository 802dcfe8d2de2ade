"""Generate ``rules/fhir/valuesets.json`` from ``rules/fhir/valueset-sources.yaml`` and VSAC expansions.

Run by a maintainer, never at evaluation time::

    python -m pressor.engine.ehr.valueset_build --vsac DIR --csv-root DIR [--sources FILE] [--output FILE]

``--vsac`` holds FHIR R4 ValueSet resources with an ``expansion`` (one JSON file each), as published
in the cqframework eCQM content repositories; ``--csv-root`` is a checkout of a repository of
published code lists as CSV (PEDSnet's Variable-Dictionary: RxNorm codes and names of drug
products). The sources file names the repositories and commits used.
The output is deterministic (sorted), so a rerun on the same inputs changes nothing.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

_HERE = Path(__file__).resolve().parents[2] / "rules" / "fhir"


def _vsac(directory: Path) -> dict[str, dict[str, Any]]:
    """OID -> ValueSet resource, for every ``*.json`` in ``directory``."""
    out = {}
    for path in sorted(directory.glob("*.json")):
        vs = json.loads(path.read_text(encoding="utf-8"))
        if vs.get("resourceType") == "ValueSet" and "expansion" in vs:
            out[vs["id"]] = vs
    return out


def _csv_rows(root: Path | None, name: str) -> list[list[str]]:
    import csv

    if root is None:
        raise SystemExit(f"{name}: needs --csv-root")
    with open(root / name, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))[1:]


def build(sources: dict[str, Any], vsac: dict[str, dict[str, Any]], csv_root: Path | None = None) -> dict[str, Any]:
    """The generated document: every value set expanded to codes, each with where it was seen."""
    systems = sources["systems"]
    every = [(oid, vs, c) for oid, vs in sorted(vsac.items()) for c in vs["expansion"].get("contains", []) if "system" in c]
    origin = sources["vsac_source"]
    out: dict[str, Any] = {}
    for name, spec in sources["valuesets"].items():
        codes: dict[tuple[str, str], dict[str, Any]] = {}

        def add(system: str, code: str, display: str, confirmed: bool, source: str) -> None:
            codes.setdefault((system, code), {"system": system, "code": code, "display": display,  # noqa: B023 (called within this iteration)
                                              "confirmed": confirmed, "source": source})

        def vsac_source(oid: str, vs: dict[str, Any]) -> str:
            return (f"VSAC {vs.get('title') or vs.get('name')} ({oid}, version {vs.get('version')}, expansion "
                    f"{vs['expansion'].get('identifier', '?')}) in {origin['repository']}@{origin['commit']}")

        for c in spec.get("codes", []):
            add(systems.get(c["system"], c["system"]), str(c["code"]), c["display"], c["confirmed"], c["source"])
        for inc in spec.get("vsac", []):
            vs = vsac.get(inc["oid"])
            if vs is None:
                raise SystemExit(f"{name}: VSAC value set {inc['oid']} not found in the --vsac directory")
            wanted = {systems[s] for s in inc["systems"]}
            exclude = re.compile(inc["exclude"], re.I) if inc.get("exclude") else None
            for c in vs["expansion"].get("contains", []):
                if c.get("system") in wanted and not (exclude and exclude.search(c.get("display", ""))):
                    add(c["system"], c["code"], c.get("display", ""), True, vsac_source(inc["oid"], vs))
        for inc in spec.get("csv", []):
            pattern = re.compile(inc["match"], re.I)
            exclude = re.compile(inc["exclude"], re.I) if inc.get("exclude") else None
            where = f"{inc['file']} in {sources['csv_source']['repository']}@{sources['csv_source']['commit']}"
            for row in _csv_rows(csv_root, inc["file"]):
                code, label = row[inc["code"]], row[inc["name"]]
                if code.isdigit() and pattern.search(label) and not (exclude and exclude.search(label)):
                    add(systems[inc["system"]], code, label, True, f"published code list {where}")
        for match in spec.get("vsac_display", []):
            pattern = re.compile(match["pattern"], re.I)
            wanted = {systems[s] for s in match["systems"]}
            for oid, vs, c in every:
                if c["system"] in wanted and pattern.search(c.get("display", "")):
                    add(c["system"], c["code"], c.get("display", ""), True, vsac_source(oid, vs))
        out[name] = {"title": spec["title"], "codes": sorted(codes.values(), key=lambda c: (c["system"], c["code"]))}
    return {
        "generated_by": "python -m pressor.engine.ehr.valueset_build (from rules/fhir/valueset-sources.yaml)",
        "version": sources["version"],
        "vsac_source": origin,
        "csv_source": sources.get("csv_source"),
        "valuesets": out,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vsac", required=True, type=Path, help="directory of VSAC ValueSet JSON files with expansions")
    parser.add_argument("--csv-root", type=Path, default=None, help="checkout of the CSV code-list repository")
    parser.add_argument("--sources", type=Path, default=_HERE / "valueset-sources.yaml")
    parser.add_argument("--output", type=Path, default=_HERE / "valuesets.json")
    args = parser.parse_args(argv)
    doc = build(yaml.safe_load(args.sources.read_text(encoding="utf-8")), _vsac(args.vsac), args.csv_root)
    args.output.write_text(json.dumps(doc, indent=1, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    total = sum(len(v["codes"]) for v in doc["valuesets"].values())
    print(f"{args.output}: {len(doc['valuesets'])} value sets, {total} codes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
