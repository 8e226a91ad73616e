//! Outbound HTTP through a journal: each exchange recorded (the request as
//! a fingerprint, the response whole, both redacted of the run's secrets),
//! or answered from the journal without leaving the sandbox.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use sha2::{Digest, Sha256};

use super::{Body, CHAIN_DEPTH_HEADER, HttpError};
use crate::journal::{Call, HttpAnswer, Tape};
use crate::secrets::SecretSet;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Reads the request's body (at most `max` bytes) and returns the request
/// rebuilt around it, with its journal entry: `METHOD URL` and a digest of
/// its headers and body, all redacted of `secrets` first, so nothing kept
/// is computed on a secret's value.
pub(super) async fn fingerprint(
    request: http::Request<Body>,
    secrets: &SecretSet,
    max: u64,
) -> Result<(http::Request<Body>, Call), HttpError> {
    let (parts, body) = request.into_parts();
    let bytes = Limited::new(body, max as usize)
        .collect()
        .await
        .map_err(|e| match e.downcast::<HttpError>() {
            Ok(e) => *e,
            Err(_) => HttpError::HttpRequestBodySize(Some(max)),
        })?
        .to_bytes();
    let url = secrets.redact_url(&parts.uri.to_string()).into_owned();
    let mut digest = Sha256::new();
    digest.update(url.as_bytes());
    let mut headers: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .filter(|(k, _)| {
            k.as_str() != CHAIN_DEPTH_HEADER
                && !super::TRACE_HEADERS.contains(&k.as_str())
                && !credential(k.as_str())
        })
        .map(|(k, v)| {
            let v = secrets.redact_prefix(v.as_bytes(), usize::MAX);
            (k.as_str().to_string(), v)
        })
        .collect();
    headers.sort();
    for (k, v) in &headers {
        digest.update((k.len() as u64).to_le_bytes());
        digest.update(k.as_bytes());
        digest.update((v.len() as u64).to_le_bytes());
        digest.update(v);
    }
    digest.update(b"\0body\0");
    digest.update(secrets.redact_prefix(&bytes, usize::MAX));
    let call = Call::Http {
        request: format!("{} {url}", parts.method),
        digest: hex::encode(digest.finalize()),
        response: None,
        error: None,
    };
    let body = Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok((http::Request::from_parts(parts, body), call))
}

/// Whether a header carries credentials: left out of the digest, so
/// nothing kept or compared is computed on them (an encoded password, a
/// signature); a replay treats them as the same grant.
fn credential(name: &str) -> bool {
    matches!(
        name,
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || [
        "auth",
        "token",
        "secret",
        "key",
        "signature",
        "password",
        "session",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// Whether two recorded requests are the same request.
pub(super) fn same_request(a: &Call, b: &Call) -> bool {
    match (a, b) {
        (
            Call::Http {
                request: r1,
                digest: d1,
                ..
            },
            Call::Http {
                request: r2,
                digest: d2,
                ..
            },
        ) => r1 == r2 && d1 == d2,
        _ => false,
    }
}

/// The head of a response as the journal keeps it, redacted.
pub(super) fn answer_head(
    status: http::StatusCode,
    headers: &http::HeaderMap,
    secrets: &SecretSet,
) -> HttpAnswer {
    HttpAnswer {
        status: status.as_u16(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                let v = secrets.redact_prefix(v.as_bytes(), usize::MAX);
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect(),
        body: String::new(),
        body_error: None,
    }
}

/// An error as the journal keeps it: its kind and what it says, masked
/// whole when it holds a piece of a secret.
pub(super) fn error_text(e: &HttpError, secrets: &SecretSet) -> String {
    let text = format!("{e:?}");
    if secrets.shares_piece(&text) {
        super::MASK.to_string()
    } else {
        text
    }
}

/// The error a recorded one stands for, as the guest sees it.
pub(super) fn error_from(text: &str) -> HttpError {
    let kind = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("");
    match kind {
        "DnsTimeout" => HttpError::DnsTimeout,
        "DnsError" => HttpError::DnsError {
            rcode: None,
            info_code: None,
        },
        "DestinationNotFound" => HttpError::DestinationNotFound,
        "DestinationUnavailable" => HttpError::DestinationUnavailable,
        "DestinationIpProhibited" => HttpError::DestinationIpProhibited,
        "ConnectionRefused" | "Connect" => HttpError::ConnectionRefused,
        "ConnectionTerminated" => HttpError::ConnectionTerminated,
        "ConnectionTimeout" => HttpError::ConnectionTimeout,
        "ConnectionReadTimeout" => HttpError::ConnectionReadTimeout,
        "HttpRequestDenied" => HttpError::HttpRequestDenied,
        "HttpResponseBodySize" => HttpError::HttpResponseBodySize(None),
        "HttpRequestBodySize" => HttpError::HttpRequestBodySize(None),
        "TlsProtocolError" | "Tls" => HttpError::TlsProtocolError,
        "TlsCertificateError" => HttpError::TlsCertificateError,
        _ => HttpError::InternalError(Some(text.to_string())),
    }
}

/// A recorded response, as the guest receives it again.
pub(super) fn replayed(answer: &HttpAnswer) -> Result<http::Response<Body>, HttpError> {
    let mut response = http::Response::builder().status(answer.status);
    for (k, v) in &answer.headers {
        response = response.header(k, v);
    }
    let data = B64
        .decode(&answer.body)
        .map_err(|e| HttpError::InternalError(Some(format!("replay: the journal's body: {e}"))))?;
    let body = Replayed {
        data: Some(Bytes::from(data)),
        error: answer.body_error.as_deref().map(error_from),
    };
    response
        .body(body.boxed_unsync())
        .map_err(|e| HttpError::InternalError(Some(format!("replay: the journal's head: {e}"))))
}

/// A replayed body: the recorded bytes, then the recorded error if the
/// read ended in one.
struct Replayed {
    data: Option<Bytes>,
    error: Option<HttpError>,
}

impl http_body::Body for Replayed {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        if let Some(data) = self.data.take().filter(|d| !d.is_empty()) {
            return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
        }
        Poll::Ready(self.error.take().map(Err))
    }
}

/// A live response body that keeps what the guest reads for the journal,
/// and writes it there (redacted) when the body ends or is dropped.
pub(super) struct Tee<B> {
    pub inner: B,
    pub tape: Tape,
    pub index: Option<usize>,
    pub secrets: Arc<SecretSet>,
    pub read: Vec<u8>,
    pub error: Option<String>,
}

impl<B> Tee<B> {
    fn keep(&mut self) {
        let Some(index) = self.index.take() else {
            return;
        };
        let body = B64.encode(self.secrets.redact_prefix(&self.read, usize::MAX));
        let error = self.error.take();
        self.tape.amend(index, |call| {
            if let Call::Http {
                response: Some(r), ..
            } = call
            {
                r.body = body;
                r.body_error = error;
            }
        });
    }
}

impl<B> Drop for Tee<B> {
    fn drop(&mut self) {
        self.keep();
    }
}

impl<B: http_body::Body<Data = Bytes, Error = HttpError> + Unpin> http_body::Body for Tee<B> {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.keep(),
            Poll::Ready(Some(Err(e))) => {
                self.error = Some(error_text(e, &self.secrets));
                self.keep();
            }
            Poll::Ready(Some(Ok(frame))) => {
                // Past the journal's cap nothing more is kept.
                if let Some(data) = frame.data_ref()
                    && self.index.is_some()
                    && !self.tape.is_over()
                {
                    let data = data.clone();
                    self.read.extend_from_slice(&data);
                }
            }
            Poll::Pending => {}
        }
        polled
    }
}
