//! Sending one checked request: connecting only to addresses that pass the
//! private-address rules, TLS, timeouts, and a response body that counts
//! its bytes and writes the request's log line when it ends.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Body, HttpError, IoFuture, OutboundConfig, RequestLog, allow};

#[derive(Clone, Copy)]
pub(super) struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub between_bytes: Duration,
}

/// The default TLS client settings: rustls with ring and the webpki roots,
/// built once.
static TLS: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    Arc::new(
        attune_util::tls::client_config(None).expect("ring supports the default protocol versions"),
    )
});

/// The addresses `host` may be reached at: resolved here, private ones
/// dropped unless allowed.
async fn addresses(
    host: &str,
    port: u16,
    config: &OutboundConfig,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, HttpError> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let resolved: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| HttpError::DnsTimeout)?
            .map_err(|e| HttpError::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            })?
            .collect(),
    };
    let allowed: Vec<SocketAddr> = resolved
        .into_iter()
        .filter(|a| config.allow_private || !allow::is_private(a.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(HttpError::DestinationIpProhibited);
    }
    Ok(allowed)
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Connects to a checked address of `host` and sends `request`.
pub(super) async fn send(
    mut request: http::Request<Body>,
    scheme: &str,
    host: &str,
    port: u16,
    config: &OutboundConfig,
    limits: Timeouts,
) -> Result<(http::Response<hyper::body::Incoming>, IoFuture), HttpError> {
    let deadline = tokio::time::Instant::now() + limits.connect;
    let addrs = addresses(host, port, config, limits.connect).await?;
    let mut stream = None;
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Ok(Err(e)) => last = Some(HttpError::Connect(e)),
            Err(_) => return Err(HttpError::ConnectionTimeout),
        }
    }
    let tcp = stream.ok_or_else(|| last.unwrap_or(HttpError::ConnectionRefused))?;
    let io: Box<dyn Stream> = if scheme == "https" {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let name = match literal.parse::<IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::from(ip),
            Err(_) => rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(HttpError::InvalidDnsNameError)?,
        };
        let tls =
            tokio_rustls::TlsConnector::from(config.tls.clone().unwrap_or_else(|| TLS.clone()));
        let s = tokio::time::timeout_at(deadline, tls.connect(name, tcp))
            .await
            .map_err(|_| HttpError::ConnectionTimeout)?
            .map_err(HttpError::Tls)?;
        Box::new(s)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = tokio::time::timeout_at(
        deadline,
        hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(io)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;
    // The connection runs on its own until the response body is read or
    // dropped; the I/O future wasmtime-wasi-http awaits reports its end.
    let conn = tokio::spawn(conn);
    let io: IoFuture = Box::new(async move {
        match conn.await {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(e)) => Err(HttpError::from(e)),
        }
    });
    // HTTP/1 sends the origin form; the Host header carries the authority.
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(
            request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
        )
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let response = tokio::time::timeout(limits.first_byte, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)??;
    Ok((response, io))
}

/// What the body wrapper logs when the response ends.
pub(super) struct Done {
    pub log: RequestLog,
    pub began: Instant,
    pub line: String,
    pub status: u16,
    pub span: super::Span,
}

/// A response body that counts its bytes, stops at the cap, times out
/// between frames, and writes the request's log line when it ends.
pub(super) struct Counted {
    pub inner: hyper::body::Incoming,
    pub bytes: u64,
    pub max: u64,
    pub idle: tokio::time::Interval,
    pub fresh: bool,
    pub done: Option<Done>,
}

impl Counted {
    fn finish(&mut self, error: Option<String>) {
        if let Some(d) = self.done.take() {
            let mut fields = vec![
                ("status".into(), d.status.to_string()),
                ("bytes".into(), self.bytes.to_string()),
                ("ms".into(), d.began.elapsed().as_millis().to_string()),
            ];
            let cut = error.is_some();
            let (level, message) = match error {
                None => ("info", format!("{} {}", d.line, d.status)),
                Some(e) => {
                    fields.push(("error".into(), e.clone()));
                    ("warn", format!("{} {} cut short: {e}", d.line, d.status))
                }
            };
            d.log.record(level, message, fields);
            let mut span = d.span;
            span.attributes.extend([
                ("http.response.status_code".into(), d.status.to_string()),
                ("attune.http.bytes_received".into(), self.bytes.to_string()),
            ]);
            if let Some(calls) = &d.log.calls {
                calls.bytes(0, self.bytes);
            }
            let failed = (cut || d.status >= 500).then(|| {
                if d.status >= 500 {
                    d.status.to_string()
                } else {
                    "cut_short".into()
                }
            });
            d.log.span(span, failed);
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        if self.fresh {
            self.fresh = false;
            self.idle.reset();
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.finish(None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish(Some(e.to_string()));
                Poll::Ready(Some(Err(HttpError::from(e))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.idle.reset();
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                    if self.bytes > self.max {
                        let max = self.max;
                        self.finish(Some(format!("more than {max} bytes")));
                        return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(max)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                if self.idle.poll_tick(cx).is_ready() {
                    self.finish(Some("the server stalled".into()));
                    return Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)));
                }
                Poll::Pending
            }
        }
    }
}
