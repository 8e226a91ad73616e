//! `wasi:http/outgoing-handler`: outbound HTTP, as far as the pack's grant
//! allows.
//!
//! Linked for every worker (so a component importing `wasi:http`
//! instantiates anywhere that advertises it) and granted per pack: every
//! request goes through [`Outbound::send_request`], which
//! - refuses a scheme, host and port that no pattern of the grant allows
//!   ([`allow`]), before any DNS lookup or connection;
//! - resolves the name itself, drops private, loopback, link-local, shared
//!   and metadata addresses unless the operator allows private networks,
//!   and connects only to an address it checked (no DNS rebinding);
//! - clamps the guest's timeouts, caps requests per execution and response
//!   bytes, speaks TLS through rustls with the webpki roots, and follows no
//!   redirect (a guest that follows one sends a new, checked request);
//! - records each request as a log line of the execution: method,
//!   `scheme://host:port`, status, bytes and milliseconds, or why it was
//!   denied.
//!
//! Sockets stay denied in the WASI context: HTTP is the only way out.

pub mod allow;
mod journal;
mod send;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{RequestOptions, WasiHttpHooks, WasiHttpView};

use self::send::{Counted, Done, Timeouts, send};
use super::journal::Call;
use super::output::LogLine;
use super::secrets::{MASK, SecretSet};
pub use allow::AllowedHosts;

type HttpError = wasmtime_wasi_http::Error;
type Body = wasmtime_wasi_http::WasiBody;

/// The capability strings a worker advertises for it (a component that
/// uses HTTP imports both interfaces).
pub const CAPABILITIES: &[&str] = &["wasi:http/outgoing-handler@0.2", "wasi:http/types@0.2"];

/// The operator's limits on outbound HTTP.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Reach private, loopback and link-local addresses too.
    pub allow_private: bool,
    /// Longest to resolve and connect.
    pub connect_timeout: Duration,
    /// Longest to wait for the response head.
    pub first_byte_timeout: Duration,
    /// Longest silence between body frames.
    pub between_bytes_timeout: Duration,
    /// Most response body bytes one request may read.
    pub max_response_bytes: u64,
    /// Most requests one execution may send.
    pub max_requests: u32,
    /// TLS settings when they differ from the webpki roots alone (a
    /// private CA, `--ca-cert`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(30),
            between_bytes_timeout: Duration::from_secs(30),
            max_response_bytes: 10 << 20,
            max_requests: 100,
            tls: None,
        }
    }
}

/// One execution's outbound HTTP: its grant, its counters, its log.
pub struct Outbound {
    allowed: Arc<AllowedHosts>,
    config: Arc<OutboundConfig>,
    requests: u32,
    log: RequestLog,
    /// The run's secrets: a host or an error the log line would show is
    /// masked when it holds a piece of one.
    secrets: Arc<SecretSet>,
    /// The run's depth in its chain of causes.
    depth: i64,
    /// The run's journal: each exchange recorded, or answered from it.
    tape: Option<crate::journal::Tape>,
    /// Its pack's quota on requests, when below the operator's limit.
    quota: Option<u32>,
    /// Set when a request was refused for the quota.
    quota_hit: bool,
    /// The W3C `traceparent` every request carries, when the run is traced
    /// and its grant propagates it.
    traceparent: Option<http::HeaderValue>,
}

/// The trace-context headers: the host sets `traceparent` (and drops a
/// guest's `tracestate`, which would belong to another trace), and a
/// journal's digest leaves both out, since they differ from run to run.
pub const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The header every outbound request carries: the depth in a chain of
/// causes of whatever it causes (the sender's depth plus one). Attune's
/// own event doors read it, so an action that posts to its own server's
/// webhook is held at `--max-chain-depth` like any other chain. Set by the
/// host after the guest, which cannot remove or lower it.
pub const CHAIN_DEPTH_HEADER: &str = "attune-chain-depth";

/// The depth a request's [`CHAIN_DEPTH_HEADER`] says (0 without one or
/// with one that is not a small number).
pub fn chain_depth<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> i64 {
    headers
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(CHAIN_DEPTH_HEADER))
        .and_then(|(_, v)| v.trim().parse::<u16>().ok())
        .map_or(0, i64::from)
}

impl Outbound {
    /// Outbound HTTP for an execution granted `allowed`.
    pub fn new(
        allowed: Arc<AllowedHosts>,
        config: Arc<OutboundConfig>,
        started: Instant,
        secrets: Arc<SecretSet>,
        depth: i64,
    ) -> Self {
        Self {
            allowed,
            config,
            requests: 0,
            log: RequestLog {
                lines: Arc::default(),
                started,
                calls: None,
            },
            secrets,
            depth,
            tape: None,
            quota: None,
            quota_hit: false,
            traceparent: None,
        }
    }

    /// Counts each request, its bytes and its span on `calls`.
    pub fn with_calls(mut self, calls: crate::calls::Calls) -> Self {
        self.log.calls = Some(calls);
        self
    }

    /// Sends `traceparent` with every request.
    pub fn with_traceparent(mut self, traceparent: Option<&str>) -> Self {
        self.traceparent = traceparent.and_then(|t| http::HeaderValue::from_str(t).ok());
        self
    }

    /// Sets the pack's quota on requests (`max_outbound_requests`).
    pub fn set_quota(&mut self, quota: Option<u32>) {
        self.quota = quota.filter(|q| *q < self.config.max_requests);
    }

    /// Why the run passed its quota, if it did.
    pub fn quota_hit(&self) -> Option<String> {
        let q = self.quota.filter(|_| self.quota_hit)?;
        Some(format!(
            "quota max_outbound_requests of {q} reached: request {} was refused",
            q + 1
        ))
    }

    /// Records each exchange on `tape`, or answers each from it when it
    /// replays (then nothing is sent).
    pub fn with_tape(mut self, tape: crate::journal::Tape) -> Self {
        self.tape = Some(tape);
        self
    }

    /// The journal's entry for a request the guest just made, taken now so
    /// the journal keeps the guest's order whatever order bodies finish in.
    fn reserve(&self) -> Option<usize> {
        self.tape.as_ref()?.record(Call::Http {
            request: String::new(),
            digest: String::new(),
            response: None,
            error: None,
        })
    }

    /// Requests sent so far (denied ones included).
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// The log lines of the requests sent so far.
    pub fn take_log(&self) -> Vec<LogLine> {
        std::mem::take(&mut *lock(&self.log.lines))
    }

    fn denied(
        &self,
        request: http::Request<Body>,
        target: String,
        method: &str,
        why: &str,
        span: Span,
    ) -> HttpFuture {
        self.log.record(
            "warn",
            format!("http {method} {target} denied: {why}"),
            vec![],
        );
        self.log.span(span, Some("denied".into()));
        // A journal keeps the denial, so a replay needs no grant.
        let slot = self.reserve();
        let tape = self.tape.clone();
        let (secrets, max) = (self.secrets.clone(), self.config.max_response_bytes);
        Box::new(async move {
            if let (Some(tape), Some(index)) = (tape, slot) {
                let fingerprint = journal::fingerprint(request, &secrets, max).await;
                tape.amend(index, |call| {
                    if let (Ok((_, asked)), Call::Http { .. }) = (fingerprint, &call) {
                        *call = asked;
                    }
                    if let Call::Http { error, .. } = call {
                        *error = Some(format!("{:?}", HttpError::HttpRequestDenied));
                    }
                });
            }
            Err(HttpError::HttpRequestDenied)
        })
    }
}

/// A failure's kind for `error.type`: the error's variant name, without
/// what it carries (which may name an address or hold a message).
fn error_type(e: &HttpError) -> String {
    let shown = format!("{e:?}");
    shown
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where an execution's request lines go: shared with the response bodies,
/// which write their line when they end.
#[derive(Clone)]
struct RequestLog {
    lines: Arc<Mutex<Vec<LogLine>>>,
    started: Instant,
    calls: Option<crate::calls::Calls>,
}

/// A request's span as it begins: its name and attributes.
pub(super) struct Span {
    pub name: String,
    pub began: Instant,
    pub attributes: Vec<(String, String)>,
}

impl RequestLog {
    /// Keeps a request's span, ending now.
    fn span(&self, span: Span, error: Option<String>) {
        if let Some(calls) = &self.calls {
            calls.span("http", span.name, span.began, span.attributes, error);
        }
    }

    fn record(&self, level: &'static str, message: String, fields: Vec<(String, String)>) {
        lock(&self.lines).push(LogLine {
            level,
            message,
            fields,
            at_ms: self.started.elapsed().as_millis() as u64,
        });
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type HttpFuture =
    Box<dyn Future<Output = Result<(http::Response<Body>, IoFuture), HttpError>> + Send>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        mut request: http::Request<Body>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> HttpFuture {
        request.headers_mut().insert(
            CHAIN_DEPTH_HEADER,
            http::HeaderValue::from(self.depth.saturating_add(1).max(1)),
        );
        if let Some(traceparent) = &self.traceparent {
            let headers = request.headers_mut();
            headers.remove(TRACE_HEADERS[1]);
            headers.insert(TRACE_HEADERS[0], traceparent.clone());
        }
        if let Some(calls) = &self.log.calls {
            calls.count(|c| &mut c.http);
        }
        let uri = request.uri().clone();
        let method = request.method().to_string();
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        // The host as the log shows it. Parsing the URL cuts through a
        // secret placed in it (the host is what comes before the first `/`
        // or after the last `@`), and exact-value redaction would miss the
        // piece: a host that holds any piece of a secret is masked whole.
        let shown = if self.secrets.shares_piece(&host) {
            MASK
        } else {
            host.as_str()
        };
        let target = format!("{scheme}://{shown}:{port}");
        // The method as the semantic conventions keep it: a known one, or
        // `_OTHER` (a guest may send anything as a method, a secret too).
        const KNOWN: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ];
        let kept = KNOWN
            .iter()
            .find(|m| **m == method)
            .copied()
            .unwrap_or("_OTHER");
        let span = Span {
            name: format!("{kept} {shown}"),
            began: Instant::now(),
            attributes: vec![
                ("http.request.method".into(), kept.to_string()),
                ("server.address".into(), shown.to_string()),
                ("server.port".into(), port.to_string()),
                ("url.scheme".into(), scheme.clone()),
            ],
        };
        // A replay answers from the journal whatever the grant says now:
        // nothing is sent, and the journal holds the denials too.
        if let Some(tape) = self.tape.clone().filter(|t| t.is_replay()) {
            // The quota holds in a replay too (its denial is the journal's
            // next call, as it was recorded).
            if let Some(q) = self.quota
                && self.requests >= q
            {
                self.quota_hit = true;
                tape.claim();
                return Box::new(async { Err(HttpError::HttpRequestDenied) });
            }
            self.requests += 1;
            let (secrets, max) = (self.secrets.clone(), self.config.max_response_bytes);
            let slot = tape.claim();
            return Box::new(async move {
                let (_, asked) = journal::fingerprint(request, &secrets, max).await?;
                let replayed = tape.answer_at(slot, &asked, |c| journal::same_request(c, &asked));
                let io: IoFuture = Box::new(async { Ok(()) });
                match replayed {
                    Some(Call::Http {
                        response: Some(answer),
                        ..
                    }) => Ok((journal::replayed(&answer)?, io)),
                    Some(Call::Http {
                        error: Some(error), ..
                    }) => Err(journal::error_from(&error)),
                    _ => Err(HttpError::InternalError(Some(
                        "replay: the journal holds another call here".into(),
                    ))),
                }
            });
        }
        if !self.allowed.allows(&scheme, &host, port) {
            return self.denied(
                request,
                target,
                &method,
                "not in the pack's allowed_outbound_hosts",
                span,
            );
        }
        if let Some(q) = self.quota
            && self.requests >= q
        {
            self.quota_hit = true;
            let why = format!("quota max_outbound_requests of {q} reached");
            return self.denied(request, target, &method, &why, span);
        }
        if self.requests >= self.config.max_requests {
            let why = format!(
                "more than {} requests in one execution",
                self.config.max_requests
            );
            return self.denied(request, target, &method, &why, span);
        }
        self.requests += 1;
        let clamp = |asked: Option<Duration>, most: Duration| asked.map_or(most, |d| d.min(most));
        let config = self.config.clone();
        let limits = Timeouts {
            connect: clamp(
                options.and_then(|o| o.connect_timeout),
                config.connect_timeout,
            ),
            first_byte: clamp(
                options.and_then(|o| o.first_byte_timeout),
                config.first_byte_timeout,
            ),
            between_bytes: clamp(
                options.and_then(|o| o.between_bytes_timeout),
                config.between_bytes_timeout,
            ),
        };
        let log = self.log.clone();
        let secrets = self.secrets.clone();
        let tape = self.tape.clone();
        let index = self.reserve();
        Box::new(async move {
            let began = Instant::now();
            let request = match (&tape, index) {
                (Some(tape), Some(index)) => {
                    let fingerprint =
                        journal::fingerprint(request, &secrets, config.max_response_bytes).await;
                    match fingerprint {
                        Ok((request, call)) => {
                            tape.amend(index, |c| *c = call);
                            request
                        }
                        Err(e) => {
                            let why = journal::error_text(&e, &secrets);
                            tape.amend(index, |c| {
                                if let Call::Http { error, .. } = c {
                                    *error = Some(why);
                                }
                            });
                            return Err(e);
                        }
                    }
                }
                _ => request,
            };
            let request = match &log.calls {
                Some(calls) => {
                    let calls = calls.clone();
                    request.map(|body| {
                        body.map_frame(move |frame| {
                            if let Some(data) = frame.data_ref() {
                                calls.bytes(data.len() as u64, 0);
                            }
                            frame
                        })
                        .boxed_unsync()
                    })
                }
                None => request,
            };
            let sent = send(request, &scheme, &host, port, &config, limits).await;
            if let (Some(tape), Some(index)) = (&tape, index) {
                let kept = match &sent {
                    Ok((response, _)) => Ok(journal::answer_head(
                        response.status(),
                        response.headers(),
                        &secrets,
                    )),
                    Err(e) => Err(journal::error_text(e, &secrets)),
                };
                tape.amend(index, |call| {
                    if let Call::Http {
                        response, error, ..
                    } = call
                    {
                        match kept {
                            Ok(head) => *response = Some(head),
                            Err(e) => *error = Some(e),
                        }
                    }
                });
            }
            match sent {
                Ok((response, io)) => {
                    let (parts, incoming) = response.into_parts();
                    let body = Counted {
                        inner: incoming,
                        bytes: 0,
                        max: config.max_response_bytes,
                        idle: tokio::time::interval(limits.between_bytes),
                        fresh: true,
                        done: Some(Done {
                            log,
                            began,
                            line: format!("http {method} {target}"),
                            status: parts.status.as_u16(),
                            span,
                        }),
                    };
                    let body = match (tape, index) {
                        (Some(tape), Some(index)) => journal::Tee {
                            inner: body,
                            tape,
                            index: Some(index),
                            secrets,
                            read: Vec::new(),
                            error: None,
                        }
                        .boxed_unsync(),
                        _ => body.boxed_unsync(),
                    };
                    Ok((http::Response::from_parts(parts, body), io))
                }
                Err(e) => {
                    let why = e.to_string();
                    let why = if secrets.shares_piece(&why) {
                        MASK.to_string()
                    } else {
                        why
                    };
                    log.record(
                        "warn",
                        format!("http {method} {target} failed: {why}"),
                        vec![("ms".into(), began.elapsed().as_millis().to_string())],
                    );
                    log.span(span, Some(error_type(&e)));
                    Err(e)
                }
            }
        })
    }
}

/// Links `wasi:http` (types and the outgoing handler) for a store whose
/// state gives the hooks ([`Outbound`]) through [`WasiHttpView`].
pub fn add_to_linker<T: WasiHttpView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}
