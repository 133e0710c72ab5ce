"""OpenAPI additions: the auth schemes and the error responses every operation can give.

Views declare their success responses; the error shape is global (api/errors.py), so it is
added here to every operation once instead of repeating it on ~70 `extend_schema` calls.
Schemathesis checks responses against this schema (tests/security/test_schemathesis.py), so an
undeclared status or body shape fails the suite.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
            # Some errors carry extra fields (expected_offset, position, retry_after).
            "additionalProperties": True,
        }
    },
}

# Status codes any operation may answer with the error body, and why.
ERROR_RESPONSES: dict[str, str] = {
    "400": "Invalid input.",
    "401": "Missing, invalid, expired or revoked credentials.",
    "403": "Visible, but the caller's role is too low.",
    "404": "Missing, or not visible to the caller.",
    "405": "Method not allowed.",
    "406": "Not acceptable.",
    "409": "Conflict with the current state (offsets, existing objects).",
    "413": "Request body too large.",
    "415": "Unsupported media type.",
    "429": "Rate limited; see Retry-After.",
    "503": "Temporarily unavailable (database or storage); retry.",
}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> Any:
    """drf-spectacular postprocessing hook: declare the error responses on every operation."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            for code, description in ERROR_RESPONSES.items():
                responses.setdefault(
                    code,
                    {"description": description, "content": {"application/json": {"schema": ref}}},
                )
    return result


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "trk_<prefix>_<secret>"}


class ShareLinkScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.ShareLinkAuthentication"
    name = "shareLink"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "query", "name": "share"}


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.CsrfSessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "cookie", "name": "sessionid"}
