//! Outbound HTTP from an action, over `wasi:http/outgoing-handler`.
//!
//! A request reaches only what the action's pack is granted
//! (`allowed_outbound_hosts` in `pack.toml`; `--allow-outbound` with
//! `attune action run`); anything else fails with `HttpRequestDenied` before
//! a connection is made. The host follows no redirect, caps requests and
//! response bytes per execution, and clamps timeouts.
//!
//! ```ignore
//! let token = attune_sdk::secrets::get("gh_token").map_err(|e| e.name().to_string())?;
//! let response = attune_sdk::http::Request::get("https://api.github.com/user")
//!     .header("authorization", &format!("Bearer {token}"))
//!     .header("user-agent", "attune")
//!     .send()
//!     .map_err(|e| e.to_string())?;
//! Ok(response.text())
//! ```

use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};
use wasip2::io::streams::StreamError;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn error(context: &str, detail: impl std::fmt::Debug) -> Error {
    Error(format!("{context}: {detail:?}"))
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `POST`, … (any token).
    pub method: String,
    /// `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
    /// How long to wait for the connection and for each part of the
    /// response (the host clamps it).
    pub timeout: Option<Duration>,
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body's bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Request {
    /// A request with `method` to `url`, no headers, no body.
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout: None,
        }
    }

    /// A `GET` of `url`.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` of `body` to `url`.
    pub fn post(url: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", url).body(body)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends it and reads the whole response.
    pub fn send(self) -> Result<Response, Error> {
        send(self)
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, Error> {
    Request::get(url).send()
}

/// `POST url` with `body` of `content_type`.
pub fn post(url: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Result<Response, Error> {
    Request::post(url, body)
        .header("content-type", content_type)
        .send()
}

/// Sends `request` and reads the whole response.
pub fn request(request: Request) -> Result<Response, Error> {
    send(request)
}

fn method(name: &str) -> Method {
    match name.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        _ => Method::Other(name.to_string()),
    }
}

fn send(request: Request) -> Result<Response, Error> {
    let uri: http::Uri = request
        .url
        .parse()
        .map_err(|e| Error(format!("invalid URL `{}`: {e}", request.url)))?;
    let scheme = match uri.scheme_str() {
        Some("https") => Scheme::Https,
        Some("http") => Scheme::Http,
        other => {
            return Err(Error(format!(
                "invalid URL `{}`: the scheme must be http or https, not {other:?}",
                request.url
            )));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| Error(format!("invalid URL `{}`: no host", request.url)))?;
    let fields = Fields::new();
    for (name, value) in &request.headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| error(&format!("header `{name}`"), e))?;
    }
    // A body of known length is sent with its length, not chunked: some
    // servers refuse chunked requests.
    if let Some(body) = &request.body
        && !request
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        fields
            .append("content-length", body.len().to_string().as_bytes())
            .map_err(|e| error("header `content-length`", e))?;
    }
    let outgoing = OutgoingRequest::new(fields);
    outgoing
        .set_method(&method(&request.method))
        .map_err(|()| Error(format!("invalid method `{}`", request.method)))?;
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| Error("invalid scheme".into()))?;
    outgoing
        .set_authority(Some(authority.as_str()))
        .map_err(|()| Error(format!("invalid authority `{authority}`")))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    outgoing
        .set_path_with_query(Some(path))
        .map_err(|()| Error(format!("invalid path `{path}`")))?;
    let options = request.timeout.map(|t| {
        let options = RequestOptions::new();
        let ns = t.as_nanos().min(u64::MAX as u128) as u64;
        // The host may refuse a value; it clamps the rest.
        let _ = options.set_connect_timeout(Some(ns));
        let _ = options.set_first_byte_timeout(Some(ns));
        let _ = options.set_between_bytes_timeout(Some(ns));
        options
    });
    let body = outgoing
        .body()
        .map_err(|()| Error("the request body was taken".into()))?;
    let pending = outgoing_handler::handle(outgoing, options)
        .map_err(|e| error("the request was refused", e))?;
    {
        let stream = body
            .write()
            .map_err(|()| Error("the request body stream was taken".into()))?;
        for chunk in request.body.as_deref().unwrap_or_default().chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| error("sending the body", e))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| error("finishing the body", e))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or_else(|| Error("no response".into()))?
        .map_err(|()| Error("the response was taken twice".into()))?
        .map_err(|e| error("the request failed", e))?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| Error("the response body was taken".into()))?;
    let mut bytes = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| Error("the response body stream was taken".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend(chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(Error(format!("reading the body: {}", e.to_debug_string())));
                }
            }
        }
    }
    Ok(Response {
        status,
        headers,
        body: bytes,
    })
}
