//! The settings API: `PUT /api/cases/{case}` with a JSON body `{"probability": 0.01,
//! "active": true}` (each field optional) and `Authorization: Bearer <token>`.
//!
//! | Answer | When |
//! |---|---|
//! | 403 | no admin token is configured: the API is read-only |
//! | 401 | the token is missing or wrong (nothing changes) |
//! | 404 | no such case |
//! | 400 | the body or `X-LiveCheck-Actor` is not valid |
//! | 503 | the control topic is not read yet, or Kafka did not acknowledge the change |
//! | 200 | published (or nothing to change): `{"case", "changed", "read_back", "published": CaseControl}` |
//!
//! The change is published with `changed_by: "api"`, or `"api:<actor>"` with a header
//! `X-LiveCheck-Actor: <actor>` (letters, digits, `.`, `_`, `-`, `@`, `+`; at most 64).
//! Tokens are compared in constant time (SHA-256 of both, compared byte by byte without an
//! early exit).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use livecheck_core::signing::SecretString;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::control::{Control, BY_API};

/// Header naming who makes a change (`changed_by: "api:<actor>"`).
pub const ACTOR_HEADER: &str = "x-livecheck-actor";
/// What a read-only API answers.
pub const READ_ONLY: &str = "the settings API is read-only: no admin token is configured. Set `admin_token` in the profile, LIVECHECK_ADMIN_TOKEN or --admin-token, and send it as `Authorization: Bearer <token>`";

/// The settings API's configuration: the token, and where changes go.
#[derive(Clone, Default)]
pub struct AdminApi {
    token: Option<SecretString>,
    control: Option<Arc<Control>>,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("control", &self.control)
            .finish()
    }
}

impl AdminApi {
    /// Changes require `token` (`None`: read-only) and are published through `control`.
    pub fn new(token: Option<SecretString>, control: Option<Arc<Control>>) -> Self {
        Self { token, control }
    }

    /// Whether a token is configured.
    pub fn writable(&self) -> bool {
        self.token.is_some()
    }
}

/// `a == b` in time that depends on neither (both are hashed first).
pub fn tokens_match(given: &str, expected: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    let diff = a.iter().zip(b.iter()).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The body of a change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    probability: Option<f64>,
    active: Option<bool>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut r = (status, Json(json!({ "error": message.into() }))).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `changed_by` for the request's actor header.
fn changed_by(headers: &HeaderMap) -> Result<String, String> {
    let Some(value) = headers.get(ACTOR_HEADER) else {
        return Ok(BY_API.to_owned());
    };
    let actor = value.to_str().unwrap_or("\u{fffd}").trim();
    let valid = !actor.is_empty()
        && actor.len() <= 64
        && actor
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@+".contains(c));
    if valid {
        Ok(format!("{BY_API}:{actor}"))
    } else {
        Err("X-LiveCheck-Actor must be 1 to 64 characters: letters, digits, `.`, `_`, `-`, `@`, `+`".to_owned())
    }
}

/// `PUT /api/cases/{case}`.
pub(crate) async fn put_case(
    State(api): State<AdminApi>,
    Path(case): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = &api.token else {
        return error(StatusCode::FORBIDDEN, READ_ONLY);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let authorized = given.is_some_and(|g| tokens_match(g, token.expose()));
    if !authorized {
        warn!(
            case,
            reason = if given.is_some() {
                "wrong token"
            } else {
                "no bearer token"
            },
            "refused a settings change: not authorized; nothing changed"
        );
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token: send `Authorization: Bearer <token>` (the token of `admin_token` / LIVECHECK_ADMIN_TOKEN / --admin-token); nothing was changed",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"livecheck\""),
        );
        return r;
    }
    let Some(control) = &api.control else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this livecheck instance publishes no settings (it has no control topic)",
        );
    };
    if !control.knows(&case) {
        let mut names: Vec<String> = control.config().into_keys().collect();
        names.sort();
        return error(
            StatusCode::NOT_FOUND,
            format!("no case named {case:?} (cases: {})", names.join(", ")),
        );
    }
    let by = match changed_by(&headers) {
        Ok(by) => by,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let patch: Patch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a valid change ({e}): send JSON like {{\"probability\": 0.01, \"active\": true}} (each field optional)"),
            )
        }
    };
    if patch.probability.is_none() && patch.active.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "nothing to change: give `probability` (0 to 1) and/or `active` (true or false)",
        );
    }
    if let Some(p) = patch.probability {
        if !(0.0..=1.0).contains(&p) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("probability {p} is not between 0 and 1"),
            );
        }
    }
    match control
        .set(&case, patch.probability, patch.active, &by)
        .await
    {
        Ok(change) => {
            if !change.changed {
                info!(
                    case,
                    by,
                    "settings change asked with the values already published: nothing published"
                );
            }
            let mut r = Json(json!({
                "case": case,
                "changed": change.changed,
                "read_back": change.read_back,
                "published": change.published,
            }))
            .into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(err) => {
            warn!(case, by, error = %err, "settings change not published");
            error(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        assert!(tokens_match("0123456789abcdef", "0123456789abcdef"));
        assert!(!tokens_match("0123456789abcdeF", "0123456789abcdef"));
        assert!(!tokens_match("0123456789abcde", "0123456789abcdef"));
        assert!(!tokens_match("", "0123456789abcdef"));
    }

    #[test]
    fn the_actor_is_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(changed_by(&h).as_deref(), Ok("api"));
        h.insert(ACTOR_HEADER, HeaderValue::from_static("alice@example.com"));
        assert_eq!(changed_by(&h).as_deref(), Ok("api:alice@example.com"));
        h.insert(ACTOR_HEADER, HeaderValue::from_static("alice; drop"));
        assert!(changed_by(&h).is_err());
    }
}
