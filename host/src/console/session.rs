//! Signing in and out: an API token traded for a session cookie.
//!
//! The cookie holds a random value; the database keeps only its SHA-256
//! with the token it stands for, so a session ends when it expires, when
//! its owner signs out, or when its token is revoked.

use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Router, routing::get};
use minijinja::context;
use serde::Deserialize;

use super::{Page, UiError, render, see};
use crate::api::AppState;
use crate::api::auth::{Caller, hash_token, new_token};
use attune_engine::records::{Role, now_ms};
use attune_engine::tokens;

/// The session cookie's name.
pub const COOKIE: &str = "attune_session";

/// How long a session lasts.
const LIFETIME: std::time::Duration = std::time::Duration::from_secs(8 * 3600);

/// Longest token the form takes.
const MAX_TOKEN: usize = 256;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", get(logout_form).post(logout))
}

/// The signed-in caller of a console request; without a live session, the
/// request goes to the login page.
pub(crate) struct Session(pub Caller);

impl FromRequestParts<AppState> for Session {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, UiError> {
        let value = cookie(&parts.headers).ok_or(UiError::Login)?;
        let token = tokens::session(state, &hash_token(value))
            .await?
            .ok_or(UiError::Login)?;
        Ok(Session(Caller { token }))
    }
}

/// The session cookie's value in a request's `Cookie` headers. (Parsing
/// one `name=value` pair needs no cookie crate.)
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
}

/// Whether a request comes from a page of this server: its `Origin` is
/// `http(s)://` and the `Host` it was sent to. Browsers send `Origin` with
/// every POST; a request without one is refused.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let (Some(origin), Some(host)) = (text(header::ORIGIN), text(header::HOST)) else {
        return false;
    };
    origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_form() -> Page {
    Ok(render("login.html", context! {})?.into_response())
}

/// Checks the token and starts a session. Worker tokens cannot sign in.
async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Page {
    let token = form.token.trim();
    let record = if token.is_empty() || token.len() > MAX_TOKEN {
        None
    } else {
        tokens::authenticate(&state, &hash_token(token))
            .await?
            .filter(|t| t.role != Role::Worker)
    };
    let Some(record) = record else {
        let html = render(
            "login.html",
            context! { error => "That token is unknown, revoked, or a worker's." },
        )?;
        return Ok((StatusCode::UNAUTHORIZED, html).into_response());
    };
    let value = new_token();
    let expires = now_ms() + LIFETIME.as_millis() as i64;
    tokens::open_session(&state, &hash_token(&value), record.id, expires).await?;
    let secure = if state.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        LIFETIME.as_secs()
    );
    Ok(with_cookie(see("/ui/executions"), &cookie))
}

async fn logout_form(session: Session) -> Page {
    super::page(&session.0, "", "logout.html", context! {})
}

/// Ends the session and clears the cookie.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Page {
    if let Some(value) = cookie(&headers) {
        tokens::close_session(&state, &hash_token(value)).await?;
    }
    let cookie = format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(with_cookie(see("/ui/login"), &cookie))
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; attune_session=abc; b=2")]);
        assert_eq!(cookie(&h), Some("abc"));
        let h = headers(&[
            ("cookie", "attune_sessionx=abc"),
            ("cookie", "attune_session="),
        ]);
        assert_eq!(cookie(&h), None);
    }

    #[test]
    fn only_this_origin_may_post() {
        let ok = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert!(same_origin(&ok));
        let tls = headers(&[
            ("origin", "https://attune.example"),
            ("host", "attune.example"),
        ]);
        assert!(same_origin(&tls));
        for bad in [
            headers(&[
                ("origin", "http://evil.example"),
                ("host", "127.0.0.1:8080"),
            ]),
            headers(&[("origin", "null"), ("host", "127.0.0.1:8080")]),
            headers(&[
                ("origin", "http://127.0.0.1:8080.evil"),
                ("host", "127.0.0.1:8080"),
            ]),
            headers(&[("host", "127.0.0.1:8080")]),
        ] {
            assert!(!same_origin(&bad));
        }
    }
}
