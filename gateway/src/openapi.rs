//! The API's OpenAPI 3.1 document, generated from the handlers' own annotations
//! (`#[utoipa::path]`) and request types. The router is built from the same annotated
//! handlers (`utoipa_axum::routes!`), so a route cannot be served without being documented;
//! served at `/api/v1/openapi.json`.
//!
//! Request bodies and query parameters are the handlers' own types. Success answers are
//! documented as JSON objects (or arrays of them) without their fields: the views are built
//! as JSON from several records, and the README's API section says what they hold. Errors
//! are documented in full.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(utoipa::ToSchema, serde::Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(utoipa::ToSchema, serde::Serialize)]
pub struct ErrorDetail {
    /// A stable code: `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `method_not_allowed`, `too_large`, `unsupported_media_type`, `invalid`, `too_many_requests`,
    /// `unavailable`, `internal`.
    pub code: String,
    /// What went wrong and what to fix, naming the field.
    pub message: String,
}

/// The error answers of a request that reads.
#[derive(utoipa::IntoResponses)]
pub enum ReadErrors {
    /// A bad id in the path or a bad query parameter.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No valid token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The token may not do this.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such record (or another client's).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// An invalid query value (a page size out of bounds, an unknown status).
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// Too many failed authentications from this address (see `Retry-After`).
    #[response(status = 429)]
    TooManyRequests(ErrorBody),
    /// The state database is unreachable (see `Retry-After`).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// One server-sent event of a task: `log` (its data a log line: id, at, level, message) or
/// `status` (its data the task), as JSON.
#[derive(utoipa::ToSchema, serde::Serialize)]
pub struct TaskEventMessage {
    /// `log` or `status`.
    pub event: String,
    /// The event's JSON.
    pub data: String,
}

/// The error answers of a request that changes something.
#[derive(utoipa::IntoResponses)]
pub enum WriteErrors {
    /// A body that is not the expected JSON, a bad id in the path.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No valid token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The token may not do this.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such record (or another client's).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// A conflict: a name in use, a task the site cannot run now.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// A body over 1 MiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// A body that is not JSON.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// An invalid value; the message names the field.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// Too many failed authentications from this address (see `Retry-After`).
    #[response(status = 429)]
    TooManyRequests(ErrorBody),
    /// The state database is unreachable (see `Retry-After`).
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The bearer token every operation takes.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`hst_...`): `gateway bootstrap` writes the first admin token; POST /tokens makes more",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "hosting control plane",
        description = "Sites, platforms, servers, clients, tasks and their logs, backups, tokens, settings and dead letters. What changes a site or a platform is a task: it is accepted (202) and runs in order per site; follow it with GET /tasks/{id}/events. Lists answer an array, with the total in X-Total-Count and the next page in Link. Every route answers 405 (JSON) to a method it does not take.",
    ),
    servers((url = "/api/v1")),
    modifiers(&BearerToken),
    security(("token" = [])),
    components(schemas(ErrorBody, ErrorDetail, TaskEventMessage)),
    tags(
        (name = "servers", description = "Web and database servers and their agents"),
        (name = "platforms", description = "Codebases sites run on"),
        (name = "clients", description = "Who owns sites"),
        (name = "sites", description = "Sites and their tasks"),
        (name = "tasks", description = "Tasks, their logs and events"),
        (name = "tokens", description = "API tokens"),
        (name = "settings", description = "The control plane's settings"),
        (name = "dead-letters", description = "Messages no consumer could take"),
    )
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    /// Every API route, as `(method, path)`: a route added to the router without its
    /// `#[utoipa::path]` (or a documented one that is not served) fails here.
    const ROUTES: &[(&str, &str)] = &[
        ("post", "/servers"),
        ("get", "/servers"),
        ("get", "/servers/{id}"),
        ("patch", "/servers/{id}"),
        ("post", "/servers/{id}/credentials"),
        ("post", "/servers/{id}/tasks"),
        ("post", "/platforms"),
        ("get", "/platforms"),
        ("get", "/platforms/{id}"),
        ("post", "/platforms/{id}/tasks"),
        ("post", "/clients"),
        ("get", "/clients"),
        ("post", "/sites"),
        ("get", "/sites"),
        ("get", "/sites/{id}"),
        ("post", "/sites/{id}/tasks"),
        ("get", "/sites/{id}/backups"),
        ("get", "/sites/{id}/migrate-targets"),
        ("get", "/sites/{id}/backup-schedule"),
        ("put", "/sites/{id}/backup-schedule"),
        ("get", "/tasks"),
        ("post", "/tasks"),
        ("get", "/tasks/{id}"),
        ("get", "/tasks/{id}/log"),
        ("get", "/tasks/{id}/events"),
        ("post", "/tasks/{id}/cancel"),
        ("post", "/tasks/{id}/retry"),
        ("post", "/tokens"),
        ("get", "/tokens"),
        ("delete", "/tokens/{id}"),
        ("get", "/settings"),
        ("patch", "/settings"),
        ("get", "/dead-letters"),
        ("delete", "/dead-letters/{id}"),
        ("post", "/dead-letters/{id}/replay"),
    ];

    fn document() -> serde_json::Value {
        let (_, doc) = crate::routes::api_router().split_for_parts();
        serde_json::to_value(&doc).expect("the document serializes")
    }

    #[test]
    fn every_route_is_documented_with_its_parameters_and_errors() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        let mut documented = Vec::new();
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("a path item") {
                documented.push((method.clone(), path.clone()));
                let responses = op["responses"].as_object().expect("responses");
                for code in ["401", "403", "404", "503"] {
                    assert!(
                        responses.contains_key(code),
                        "{method} {path} lacks its {code}"
                    );
                }
                if path.contains("{id}") {
                    let params = op["parameters"].as_array().expect("parameters");
                    assert!(
                        params
                            .iter()
                            .any(|p| p["name"] == "id" && p["in"] == "path"),
                        "{method} {path} does not document its id"
                    );
                }
                if method != "get" && method != "delete" {
                    assert!(
                        responses.contains_key("422") && responses.contains_key("409"),
                        "{method} {path} lacks its write errors"
                    );
                }
            }
        }
        documented.sort();
        let mut expected: Vec<(String, String)> = super::tests::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        expected.sort();
        assert_eq!(documented, expected);
    }

    #[test]
    fn the_router_has_no_undocumented_api_route() {
        // The API's router is built with `routes!` only; a plain `.route(` there would serve
        // an undocumented path. (The document's own route is the one exception.)
        let source = include_str!("routes/mod.rs");
        let start = source.find("pub fn api_router").expect("api_router");
        let end = start + source[start..].find("\n}\n").expect("its end");
        let api = &source[start..end];
        assert!(api.contains("routes!(sites::create"), "{api}");
        assert!(!api.contains(".route("), "an API route outside routes!()");
    }

    #[test]
    fn queries_and_bodies_are_described() {
        let doc = document();
        let sites = &doc["paths"]["/sites"]["get"]["parameters"];
        for name in [
            "domain", "client", "status", "platform", "search", "limit", "after",
        ] {
            assert!(
                sites
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["name"] == name && p["in"] == "query")),
                "GET /sites lacks {name}: {sites}"
            );
        }
        let body = &doc["paths"]["/sites"]["post"]["requestBody"];
        assert!(body.to_string().contains("NewSiteBody"), "{body}");
        let schema = &doc["components"]["schemas"]["NewSiteBody"];
        for field in [
            "domain",
            "client",
            "platform",
            "profile",
            "language",
            "db_server",
        ] {
            assert!(
                schema["required"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|f| f == field)),
                "{field}: {schema}"
            );
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["token"]["scheme"],
            "bearer"
        );
    }
}
