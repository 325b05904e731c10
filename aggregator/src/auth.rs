//! Bearer tokens of the HTTP API: checked by middleware before any handler
//! reads a body, compared in constant time, scheme matched case-insensitively.
//!
//! The configured tokens are hashed once at start-up; a presented token is
//! hashed and the two SHA-256 digests compared with no early exit, so neither
//! a matching prefix nor the configured token's length shows in the time a
//! refusal takes. Write routes sit behind [`write_guard`], which answers 401
//! before the request body is read, so an unauthenticated client cannot make
//! the aggregator parse (or wait for) a body it would refuse anyway.

use crate::api::ApiError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::digest::{digest, SHA256};
use std::sync::Arc;

/// A token's SHA-256 digest: what is kept and compared, never the token.
#[derive(Clone, Copy)]
struct Digest([u8; 32]);

impl Digest {
    fn of(token: &str) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        Self(out)
    }

    /// Equal digests, compared without an early exit.
    fn matches(&self, other: &Digest) -> bool {
        self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// The API's tokens, as digests.
#[derive(Clone)]
pub struct Tokens {
    read: Option<Digest>,
    write: Option<Digest>,
}

impl Tokens {
    /// From the configured tokens (an empty one counts as unset, as in `App`).
    pub fn new(read: Option<&str>, write: Option<&str>) -> Arc<Self> {
        let d = |t: Option<&str>| t.filter(|t| !t.is_empty()).map(Digest::of);
        Arc::new(Self {
            read: d(read),
            write: d(write),
        })
    }

    fn presented(headers: &HeaderMap) -> Option<Digest> {
        bearer(headers).map(Digest::of)
    }

    fn is_write(&self, given: Option<&Digest>) -> bool {
        matches!((given, &self.write), (Some(g), Some(w)) if g.matches(w))
    }

    fn is_read(&self, given: Option<&Digest>) -> bool {
        matches!((given, &self.read), (Some(g), Some(r)) if g.matches(r))
    }
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is
/// case-insensitive (RFC 9110 §11.1: `bearer` and `BEARER` are the same
/// scheme); spaces around the token are ignored.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Guards `/api/...` reads when a read token is configured (the write token
/// also reads); open otherwise.
pub async fn read_guard(State(tokens): State<Arc<Tokens>>, req: Request, next: Next) -> Response {
    if tokens.read.is_some() {
        let given = Tokens::presented(req.headers());
        if !(tokens.is_read(given.as_ref()) || tokens.is_write(given.as_ref())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this API needs a bearer token (http.read_token)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Guards state-changing routes: the write token, checked before the body is read.
pub async fn write_guard(State(tokens): State<Arc<Tokens>>, req: Request, next: Next) -> Response {
    if tokens.write.is_none() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "state-changing requests are disabled: set http.write_token (ZONESYNC_HTTP__WRITE_TOKEN)",
        )
        .into_response();
    }
    if !tokens.is_write(Tokens::presented(req.headers()).as_ref()) {
        return ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_exact() {
        for auth in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "Bearer   s3cret "] {
            assert_eq!(bearer(&with(auth)), Some("s3cret"), "{auth}");
        }
        for auth in ["Basic s3cret", "Bearers3cret", "Bearer ", "s3cret"] {
            assert_eq!(bearer(&with(auth)), None, "{auth}");
        }
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn only_the_configured_token_matches_whatever_its_length() {
        let t = Tokens::new(Some("r3ad"), Some("wr1te"));
        let d = |s: &str| Some(Digest::of(s));
        assert!(t.is_read(d("r3ad").as_ref()) && !t.is_write(d("r3ad").as_ref()));
        assert!(t.is_write(d("wr1te").as_ref()));
        for wrong in ["", "r", "r3a", "r3ad ", "r3adr3adr3ad", "wr1t"] {
            assert!(
                !t.is_read(d(wrong).as_ref()) && !t.is_write(d(wrong).as_ref()),
                "{wrong}"
            );
        }
        let none = Tokens::new(None, Some(""));
        assert!(!none.is_write(d("").as_ref()), "an empty token is no token");
    }
}
