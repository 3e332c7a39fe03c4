//! The OpenAPI 3 document served at /openapi.json. It is checked against the real service by
//! schemathesis in the test suite and against the route table by a unit test.

use actix_web::HttpResponse;
use serde_json::{json, Value};

fn problem(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn ok(description: &str, schema: &str) -> (&'static str, Value) {
    (
        "200",
        json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}}),
    )
}

fn created(schema: &str) -> (&'static str, Value) {
    ("201", ok("Created", schema).1)
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

/// Error responses every authenticated operation may give.
fn errors(write: bool) -> Vec<(&'static str, Value)> {
    let mut v = vec![
        ("400", problem("Malformed request")),
        ("401", problem("Missing or invalid API key")),
        ("403", problem("API key role may not do this")),
        ("404", problem("Not found")),
        ("422", problem("Validation failed")),
        ("503", problem("Database unavailable")),
    ];
    if write {
        v.push(("409", problem("Conflict")));
        v.push(("413", problem("Body too large")));
    }
    v
}

fn op(summary: &str, success: (&str, Value), write: bool, extra: Value) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert(success.0.to_string(), success.1);
    for (code, v) in errors(write) {
        responses.insert(code.to_string(), v);
    }
    let mut o = json!({"summary": summary, "security": [{"bearer": []}], "responses": responses});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            o[k] = v;
        }
    }
    o
}

/// PostgreSQL text cannot hold NUL: such strings are not valid input anywhere.
const NO_NUL: &str = "^[^\\x00]*$";

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "pattern": NO_NUL}})
}

pub fn spec() -> Value {
    let user = path_param("name");
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "format": "int64"}});
    let no_content = ("204", json!({"description": "Done"}));
    json!({
        "openapi": "3.0.3",
        "info": {"title": "zcproxy control plane", "version": env!("CARGO_PKG_VERSION")},
        "paths": {
            "/healthz": {"get": {"summary": "Process is up", "security": [], "responses": {"200": {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/readyz": {"get": {"summary": "Database reachable", "security": [], "responses": {"200": {"description": "ready", "content": {"text/plain": {"schema": {"type": "string"}}}}, "503": problem("Database unavailable")}}},
            "/v1/users": {
                "get": op("List users", ok("A page of users", "UserPage"), false, json!({"parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                    {"name": "after", "in": "query", "schema": {"type": "string", "pattern": NO_NUL}},
                    {"name": "prefix", "in": "query", "schema": {"type": "string", "pattern": NO_NUL}},
                    {"name": "enabled", "in": "query", "schema": {"type": "boolean"}}]})),
                "post": op("Create a user", created("User"), true, json!({"requestBody": body("NewUser")}))
            },
            "/v1/users/{name}": {
                "parameters": [user],
                "get": op("Get a user", ok("The user", "User"), false, json!({})),
                "patch": op("Change password, enabled or limits", ok("The user", "User"), true, json!({"requestBody": body("UserPatch")})),
                "delete": op("Delete a user (their tunnels close)", no_content.clone(), true, json!({}))
            },
            "/v1/users/{name}/rules": {
                "parameters": [user],
                "get": op("List the user's rules", ok("Rules in order", "RuleList"), false, json!({})),
                "post": op("Add a rule", created("RuleView"), true, json!({"requestBody": body("Rule"), "parameters": [{"name": "position", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}}]}))
            },
            "/v1/users/{name}/rules/order": {
                "parameters": [user],
                "put": op("Reorder the user's rules", ok("Rules in order", "RuleList"), true, json!({"requestBody": body("Order")}))
            },
            "/v1/users/{name}/rules/{id}": {
                "parameters": [user, id],
                "get": op("Get a rule", ok("The rule", "RuleView"), false, json!({})),
                "put": op("Replace a rule", ok("The rule", "RuleView"), true, json!({"requestBody": body("Rule")})),
                "delete": op("Delete a rule", no_content.clone(), true, json!({}))
            },
            "/v1/rules": {
                "get": op("List global rules", ok("Rules in order", "RuleList"), false, json!({})),
                "post": op("Add a global rule", created("RuleView"), true, json!({"requestBody": body("Rule"), "parameters": [{"name": "position", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}}]}))
            },
            "/v1/rules/order": {"put": op("Reorder global rules", ok("Rules in order", "RuleList"), true, json!({"requestBody": body("Order")}))},
            "/v1/rules/{id}": {
                "parameters": [id],
                "get": op("Get a global rule", ok("The rule", "RuleView"), false, json!({})),
                "put": op("Replace a global rule", ok("The rule", "RuleView"), true, json!({"requestBody": body("Rule")})),
                "delete": op("Delete a global rule", no_content.clone(), true, json!({}))
            },
            "/v1/api-keys": {
                "get": op("List API keys", ok("Keys", "ApiKeyList"), false, json!({})),
                "post": op("Create an API key (secret shown once)", created("NewApiKeyResult"), true, json!({"requestBody": body("NewApiKey")}))
            },
            "/v1/api-keys/{id}": {"parameters": [id], "delete": op("Revoke an API key", no_content, true, json!({}))},
            "/v1/settings": {
                "get": op("Default action and anonymous client networks", ok("The settings", "SettingsOut"), false, json!({})),
                "put": op("Replace the settings (anonymous access comes only from here)", ok("The settings as stored", "SettingsOut"), true, json!({"requestBody": body("Settings")}))
            },
            "/v1/policy/snapshot": {"get": op("The whole policy at one revision", ok("Snapshot", "Snapshot"), false, json!({}))},
            "/v1/audit": {"get": op("Audit log, newest first", ok("A page of entries", "AuditPage"), false, json!({"parameters": [
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                {"name": "before", "in": "query", "schema": {"type": "integer", "format": "int64"}}]}))}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas()
        }
    })
}

const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
const HOST: &str = "^(\\*\\.)?([a-z0-9][a-z0-9-]{0,20}\\.){0,4}[a-z0-9][a-z0-9-]{0,20}$";
const PORT: &str =
    "^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";

fn schemas() -> Value {
    let v4 = format!("{OCTET}\\.{OCTET}\\.{OCTET}\\.{OCTET}/(3[0-2]|[12]?[0-9])");
    let v6 = "([0-9a-f]{1,4}:){7}[0-9a-f]{1,4}/(12[0-8]|1[01][0-9]|[1-9]?[0-9])";
    let cidr_re = format!("^({v4}|{v6})$");
    // Every protocol a rule may name, from the one list the data plane uses too.
    let protocols: Vec<&str> = policy::Protocol::ALL.iter().map(|p| p.as_str()).collect();
    let cidr = json!({"type": "string", "description": "IPv4 or IPv6 CIDR"});
    json!({
        "Problem": {"type": "object", "required": ["type", "title", "status", "detail"], "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object", "required": ["field", "message"], "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}}}},
        "User": {"type": "object", "required": ["name", "enabled", "created_at", "updated_at"], "properties": {
            "name": {"type": "string"}, "enabled": {"type": "boolean"}, "max_tunnels": {"type": "integer", "minimum": 1},
            "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"}}},
        "UserPage": {"type": "object", "required": ["items", "next"], "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/User"}}, "next": {"type": "string", "nullable": true}}},
        "NewUser": {"type": "object", "additionalProperties": false, "required": ["name", "password"], "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$"}, "password": {"type": "string", "minLength": 1, "maxLength": 255},
            "enabled": {"type": "boolean"}, "max_tunnels": {"type": "integer", "minimum": 1, "maximum": 2147483647, "nullable": true}}},
        "UserPatch": {"type": "object", "additionalProperties": false, "properties": {
            "password": {"type": "string", "minLength": 1, "maxLength": 255}, "enabled": {"type": "boolean"},
            "max_tunnels": {"type": "integer", "minimum": 1, "maximum": 2147483647, "nullable": true}}},
        // Requests: patterns tight enough that anything matching them is accepted.
        "Rule": {"type": "object", "additionalProperties": false, "required": ["action"], "properties": {
            "action": {"type": "string", "enum": ["allow", "deny"]},
            "hosts": {"type": "array", "items": {"type": "string", "maxLength": 200, "pattern": HOST,
                "description": "example.com or *.example.com"}},
            "destinations": {"type": "array", "items": {"type": "string", "pattern": cidr_re,
                "description": "IPv4 or IPv6 CIDR (any IPv6 notation is accepted; the pattern shows the full one)"}},
            "ports": {"type": "array", "items": {"type": "string", "pattern": PORT,
                "description": "N or LOW-HIGH (ranges accepted; the pattern shows single ports)"}},
            "protocols": {"type": "array", "items": {"type": "string", "enum": protocols}},
            "sources": {"type": "array", "items": {"type": "string", "pattern": cidr_re}}}},
        // Responses: the stored, normalised form.
        "Settings": {"type": "object", "additionalProperties": false, "required": ["default_action", "anonymous_clients"], "properties": {
            "default_action": {"type": "string", "enum": ["allow", "deny"]},
            "anonymous_clients": {"type": "array", "maxItems": 100, "items": {"type": "string", "pattern": cidr_re}}}},
        // Responses: the stored, canonical form (any IPv6 notation, host bits cleared).
        "SettingsOut": {"type": "object", "required": ["default_action", "anonymous_clients"], "properties": {
            "default_action": {"type": "string", "enum": ["allow", "deny"]},
            "anonymous_clients": {"type": "array", "items": {"type": "string"}}}},
        "RuleOut": {"type": "object", "required": ["action"], "properties": {
            "action": {"type": "string", "enum": ["allow", "deny"]},
            "hosts": {"type": "array", "items": {"type": "string"}},
            "destinations": {"type": "array", "items": {"type": "string"}},
            "ports": {"type": "array", "items": {"type": "string"}},
            "protocols": {"type": "array", "items": {"type": "string", "enum": protocols}},
            "sources": {"type": "array", "items": {"type": "string"}}}},
        "RuleView": {"allOf": [{"$ref": "#/components/schemas/RuleOut"}, {"type": "object", "required": ["id", "position"], "properties": {
            "id": {"type": "integer", "format": "int64"}, "position": {"type": "integer"}}}]},
        "RuleList": {"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/RuleView"}}}},
        "Order": {"type": "object", "additionalProperties": false, "required": ["ids"], "properties": {"ids": {"type": "array", "items": {"type": "integer", "format": "int64"}}}},
        "ApiKey": {"type": "object", "required": ["id", "name", "role", "prefix", "created_at"], "properties": {
            "id": {"type": "integer", "format": "int64"}, "name": {"type": "string"}, "role": {"type": "string", "enum": ["admin", "reader"]},
            "prefix": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"}, "revoked_at": {"type": "string", "format": "date-time"}}},
        "ApiKeyList": {"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/ApiKey"}}}},
        "NewApiKey": {"type": "object", "additionalProperties": false, "required": ["name", "role"], "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$"}, "role": {"type": "string", "enum": ["admin", "reader"]}}},
        "NewApiKeyResult": {"allOf": [{"$ref": "#/components/schemas/ApiKey"}, {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}}]},
        "Snapshot": {"type": "object", "required": ["revision", "default_action", "users", "rules"], "properties": {
            "revision": {"type": "integer"}, "default_action": {"type": "string", "enum": ["allow", "deny"]},
            "anonymous_clients": {"type": "array", "items": cidr},
            "users": {"type": "array", "items": {"type": "object", "required": ["name", "password_hash", "enabled", "rules"], "properties": {
                "name": {"type": "string"}, "password_hash": {"type": "string"}, "enabled": {"type": "boolean"},
                "max_tunnels": {"type": "integer"}, "rules": {"type": "array", "items": {"$ref": "#/components/schemas/RuleOut"}}}}},
            "rules": {"type": "array", "items": {"$ref": "#/components/schemas/RuleOut"}}}},
        "AuditEntry": {"type": "object", "required": ["id", "at", "actor", "action", "target", "details"], "properties": {
            "id": {"type": "integer", "format": "int64"}, "at": {"type": "string", "format": "date-time"}, "actor": {"type": "string"},
            "action": {"type": "string"}, "target": {"type": "string"}, "revision": {"type": "integer", "format": "int64"}, "details": {"type": "object"}}},
        "AuditPage": {"type": "object", "required": ["items", "next"], "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}}, "next": {"type": "integer", "format": "int64", "nullable": true}}}
    })
}

pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(spec())
}
