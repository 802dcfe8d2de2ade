"""The service's OpenAPI document: the routes' own, with the CDS Hooks request and card schemas (schemas/) as
its components."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from pressor.engine.evaluation.validate import schema

REQUEST_SCHEMA = "cds-hooks-request.schema.json"
CARD_SCHEMA = "cds-hooks-card.schema.json"


def body_and_answer(request_schema: str, answer_schema: str | None, errors: dict[str, str]) -> dict[str, Any]:
    """OpenAPI for a POST taking a JSON body (a schema of ``components``) and answering JSON."""
    ok: dict[str, Any] = {"description": "OK"}
    if answer_schema:
        ok["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{answer_schema}"}}}
    answers = {"200": ok, "400": {"description": "malformed JSON, a request of the wrong shape, or bad FHIR content"},
               "401": {"description": "no valid CDS Hooks JWT"}, "413": {"description": "body over max_body_bytes"},
               **{code: {"description": why} for code, why in errors.items()}}
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{request_schema}"}}}}, "responses": answers}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the CDS Hooks request and card schemas (schemas/) as its components."""
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for prefix, name in (("request", REQUEST_SCHEMA), ("cards", CARD_SCHEMA)):
        source = schema(name)
        schemas.update({f"{prefix}.{k}": _components_refs(v, prefix) for k, v in source.get("$defs", {}).items()})
        if prefix == "cards":
            schemas["cards.response"] = _components_refs(
                {k: v for k, v in source.items() if k not in ("$defs", "$schema", "$id")}, prefix)
    components["securitySchemes"] = {"cdsHooksJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                                     "description": "CDS Hooks JWT signed by a trusted issuer"}}
    doc["security"] = [{"cdsHooksJwt": []}]
    return doc


def _components_refs(node: Any, prefix: str) -> Any:
    """A JSON Schema with its ``#/$defs/X`` references pointed at ``#/components/schemas/{prefix}.X``."""
    if isinstance(node, dict):
        return {k: (f"#/components/schemas/{prefix}." + v[len("#/$defs/"):] if k == "$ref" and isinstance(v, str)
                    and v.startswith("#/$defs/") else _components_refs(v, prefix)) for k, v in node.items()}
    if isinstance(node, list):
        return [_components_refs(v, prefix) for v in node]
    return node
