//! The OpenAPI 3 description of the REST API, served at `/api/openapi.json`. A test
//! in `routes` sends every documented operation (and every undocumented method) to
//! the real filters, so this document cannot drift from what is served.

use serde_json::{Value, json};

/// The document.
pub fn document() -> Value {
    let user_id = json!({
        "name": "id", "in": "path", "required": true,
        "description": "The user's id. A non-integer id answers 404.",
        "schema": { "type": "integer", "format": "int64" }
    });
    let if_match = json!({
        "name": "If-Match", "in": "header", "required": false,
        "description": "`\"<version>\"` (the ETag): the change applies only if the user is still at that version, else 412.",
        "schema": { "type": "string" }
    });
    let user = json!({ "$ref": "#/components/schemas/User" });
    let json_of = |schema: Value| json!({ "application/json": { "schema": schema } });
    let detail = |description: &str| {
        json!({
            "description": description,
            "content": json_of(json!({ "$ref": "#/components/schemas/Detail" }))
        })
    };
    let etag = json!({ "ETag": {
        "description": "`\"<version>\"`, for If-Match.",
        "schema": { "type": "string" }
    }});
    let user_body = |description: &str| {
        json!({
            "description": description,
            "headers": etag,
            "content": json_of(user.clone())
        })
    };
    let seq = json!({
        "description": "The seq of the event this write recorded (absent when it changed nothing). The answer comes once that event is on this gateway's WebSocket feed: a socket opened before it gets the event, one opened after it has a `hello` seq at or past it.",
        "schema": { "type": "integer", "format": "int64" }
    });
    let written_body = |description: &str| {
        let mut body = user_body(description);
        body["headers"]["X-Users-Seq"] = seq.clone();
        body
    };
    let invalid = json!({
        "description": "Validation failed: field-keyed lists of messages (DRF's wording), `non_field_errors` for a body that is not an object, or `detail` for malformed JSON.",
        "content": json_of(json!({ "oneOf": [
            { "$ref": "#/components/schemas/FieldErrors" },
            { "$ref": "#/components/schemas/Detail" }
        ]}))
    });
    let name_input = json!({
        "type": "object",
        "description": "Unknown and read-only keys are ignored. Numbers are turned into strings.",
        "properties": {
            "first_name": { "type": "string", "maxLength": 100 },
            "last_name": { "type": "string", "maxLength": 100 }
        }
    });
    let request_body = |required: bool| {
        let mut schema = name_input.clone();
        if required {
            schema["required"] = json!(["first_name", "last_name"]);
        }
        json!({ "required": false, "content": json_of(schema) })
    };
    let unavailable = detail("The user-service is unavailable or too slow.");
    let not_found = detail("No such user.");
    let too_large = detail("The body is over 16 KiB.");
    let unsupported = detail("The body is not `application/json`.");
    let precondition = detail("If-Match names a version the user is no longer at.");
    let unauthenticated = json!({
        "description": "No bearer token, or one that is not valid (with `--auth jwt`).",
        "headers": { "WWW-Authenticate": { "schema": { "type": "string" } } },
        "content": json_of(json!({ "$ref": "#/components/schemas/Detail" }))
    });
    let forbidden = detail("The token's scope or fields do not allow this.");
    let throttled = json!({
        "description": "Over the caller's rate limit; `Retry-After` says when to try again.",
        "headers": { "Retry-After": { "schema": { "type": "integer" } } },
        "content": json_of(json!({ "$ref": "#/components/schemas/Detail" }))
    });
    let too_long = detail("The query string is over 4 KiB.");
    let head_too_large = detail("The request's headers are over 16 KiB.");
    // Every API operation can answer these, before it looks at the request.
    let guarded = |mut responses: Value| {
        let extra = [
            ("401", &unauthenticated),
            ("403", &forbidden),
            ("414", &too_long),
            ("429", &throttled),
            ("431", &head_too_large),
        ];
        for (status, response) in extra {
            responses[status] = response.clone();
        }
        responses
    };
    // PUT and PATCH answer alike.
    let changed = guarded(json!({
        "200": written_body("The user after the change."),
        "400": invalid,
        "404": not_found,
        "412": precondition,
        "413": too_large,
        "415": unsupported,
        "503": unavailable
    }));
    let allowed = |methods: &str| {
        json!({
            "description": "The methods this path allows.",
            "headers": { "Allow": { "schema": { "type": "string", "example": methods } } },
            "content": json_of(json!({ "$ref": "#/components/schemas/Metadata" }))
        })
    };

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Users API",
            "version": "1.0.0",
            "description": "Users with first and last names, compatible with the Django REST Framework 3.14 API it replaces. Live changes stream on the WebSocket `/ws/user-updates/`."
        },
        "paths": {
            "/api/users/": {
                "get": {
                    "operationId": "listUsers",
                    "summary": "Every user ordered by id; with `limit`, one page in DRF's LimitOffsetPagination envelope.",
                    "parameters": [
                        { "name": "limit", "in": "query", "required": false,
                          "description": "Page size; a positive integer turns paging on.",
                          "schema": { "type": "integer", "minimum": 1 } },
                        { "name": "offset", "in": "query", "required": false,
                          "schema": { "type": "integer", "minimum": 0 } }
                    ],
                    "responses": guarded(json!({
                        "200": {
                            "description": "The users: a plain array, or a page when `limit` is given.",
                            "content": json_of(json!({ "oneOf": [
                                { "type": "array", "items": user },
                                { "$ref": "#/components/schemas/Page" }
                            ]}))
                        },
                        "503": unavailable
                    }))
                },
                "post": {
                    "operationId": "createUser",
                    "summary": "Creates a user; both names are required.",
                    "requestBody": request_body(true),
                    "responses": guarded(json!({
                        "201": written_body("The new user (version 1)."),
                        "400": invalid,
                        "413": too_large,
                        "415": unsupported,
                        "503": unavailable
                    }))
                },
                "options": {
                    "operationId": "describeUsers",
                    "summary": "DRF's metadata; `Allow` lists the methods.",
                    "responses": guarded(json!({ "200": allowed("GET, POST, OPTIONS") }))
                }
            },
            "/api/users/{id}/": {
                "parameters": [user_id],
                "get": {
                    "operationId": "getUser",
                    "responses": guarded(json!({
                        "200": user_body("The user."),
                        "404": not_found,
                        "503": unavailable
                    }))
                },
                "put": {
                    "operationId": "replaceUser",
                    "summary": "Full update: both names are required.",
                    "parameters": [if_match],
                    "requestBody": request_body(true),
                    "responses": changed.clone()
                },
                "patch": {
                    "operationId": "updateUser",
                    "summary": "Partial update: only the fields sent change.",
                    "parameters": [if_match],
                    "requestBody": request_body(false),
                    "responses": changed.clone()
                },
                "delete": {
                    "operationId": "deleteUser",
                    "parameters": [if_match],
                    "responses": guarded(json!({
                        "204": { "description": "Deleted; no body.", "headers": { "X-Users-Seq": seq } },
                        "404": not_found,
                        "412": precondition,
                        "503": unavailable
                    }))
                },
                "options": {
                    "operationId": "describeUser",
                    "summary": "DRF's metadata; `Allow` lists the methods.",
                    "responses": guarded(json!({
                        "200": allowed("GET, PUT, PATCH, DELETE, OPTIONS"),
                        "404": not_found
                    }))
                }
            },
            "/api/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "security": [],
                    "summary": "This document.",
                    "responses": { "200": {
                        "description": "OpenAPI 3.",
                        "content": json_of(json!({ "type": "object" }))
                    }}
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "security": [],
                    "summary": "Liveness: the process is up.",
                    "responses": { "200": {
                        "description": "Up.",
                        "content": json_of(json!({ "$ref": "#/components/schemas/Health" }))
                    }}
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "security": [],
                    "summary": "Readiness: the user-service answers, Redis answers (when configured), and the event source is live.",
                    "responses": {
                        "200": {
                            "description": "Ready.",
                            "content": json_of(json!({ "$ref": "#/components/schemas/Health" }))
                        },
                        "503": {
                            "description": "Not ready; `checks` says what failed.",
                            "content": json_of(json!({ "$ref": "#/components/schemas/Health" }))
                        }
                    }
                }
            }
        },
        "security": [{ "bearer": [] }],
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT with `scope` `users:read` and/or `users:write`, and optionally `fields` (the fields writes may change). Not needed when the gateway runs with `--auth none`."
                }
            },
            "schemas": {
                "User": {
                    "type": "object",
                    "required": ["id", "first_name", "last_name", "created_at", "updated_at", "version"],
                    "properties": {
                        "id": { "type": "integer", "format": "int64", "readOnly": true },
                        "first_name": { "type": "string", "maxLength": 100 },
                        "last_name": { "type": "string", "maxLength": 100 },
                        "created_at": { "type": "string", "format": "date-time", "readOnly": true,
                                        "example": "2026-01-13T10:00:00.123456Z" },
                        "updated_at": { "type": "string", "format": "date-time", "readOnly": true },
                        "version": { "type": "integer", "format": "int64", "minimum": 1, "readOnly": true }
                    }
                },
                "Page": {
                    "type": "object",
                    "required": ["count", "next", "previous", "results"],
                    "properties": {
                        "count": { "type": "integer" },
                        "next": { "type": "string", "format": "uri", "nullable": true },
                        "previous": { "type": "string", "format": "uri", "nullable": true },
                        "results": { "type": "array", "items": user }
                    }
                },
                "Detail": {
                    "type": "object",
                    "required": ["detail"],
                    "properties": { "detail": { "type": "string" } }
                },
                "FieldErrors": {
                    "type": "object",
                    "description": "Messages per field, e.g. {\"first_name\": [\"This field may not be blank.\"]}; `non_field_errors` for the body as a whole.",
                    "additionalProperties": { "type": "array", "items": { "type": "string" } }
                },
                "Metadata": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "description": { "type": "string" },
                        "renders": { "type": "array", "items": { "type": "string" } },
                        "parses": { "type": "array", "items": { "type": "string" } }
                    }
                },
                "Health": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": { "type": "string", "enum": ["ok", "unavailable"] },
                        "checks": { "type": "object", "additionalProperties": { "type": "string" } }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        crate::http::assert_references_resolve(&document());
    }
}
