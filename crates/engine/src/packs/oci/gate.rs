//! The gate every registry connection of a pull goes through.
//!
//! The registry client follows redirects (blobs are often served from a
//! CDN) and fetches tokens from whatever realm the registry names, so
//! checking the reference alone would not stop it from being led to a
//! private address. Each pull therefore opens a gate: an HTTP proxy on a
//! loopback port of its own, which the client is configured to use for
//! every request, guarded by a random password. The gate
//! - tunnels HTTPS (`CONNECT`) to a name it resolves itself, dropping
//!   private, loopback, link-local and metadata addresses (the outbound
//!   rules of actions, [`attune_runtime::http::allow::is_private`]), and
//!   connects only to an address it checked;
//! - forwards plain HTTP only to a registry named by `--insecure-registry`,
//!   and only at loopback addresses;
//! - counts the bytes it relays from registries and cuts the pull off past
//!   its budget, so a manifest or token response cannot be made huge;
//! - records why it refused, so the pull can say so.
//!
//! TLS stays end to end between the client and the registry.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use attune_runtime::http::allow::is_private;

/// Why the gate refused a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The destination is not one a pull may reach.
    Address(String),
    /// The registry sent more than the pull's budget.
    TooLarge(String),
    /// The destination could not be connected to.
    Unreachable(String),
}

/// What may be reached: the loopback registries allowed over plain HTTP.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `host` or `host:port` of each `--insecure-registry`, lowercase.
    pub insecure: Vec<String>,
    /// Most bytes relayed from registries in one pull.
    pub budget: u64,
    /// Longest to resolve and connect.
    pub connect_timeout: Duration,
}

impl Policy {
    /// Whether `host:port` is an insecure (loopback, plain HTTP) registry.
    pub fn is_insecure(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let with_port = format!("{host}:{port}");
        self.insecure.iter().any(|i| *i == host || *i == with_port)
    }
}

struct Shared {
    policy: Policy,
    password: String,
    left: AtomicU64,
    refusal: Mutex<Option<Refusal>>,
    /// Set when the gate closes: tunnels and forwarded connections end then
    /// rather than outliving the pull that opened them.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    /// Runs `work` on its own task until it ends or the gate closes.
    fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let mut closed = self.closed.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                () = work => {}
                _ = closed.wait_for(|c| *c) => {}
            }
        });
    }

    fn refuse(&self, refusal: Refusal) -> Refusal {
        let mut slot = self.refusal.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(refusal.clone());
        refusal
    }

    /// Takes `n` bytes from the budget; false once it is spent.
    fn spend(&self, n: usize) -> bool {
        let n = n as u64;
        let ok = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .is_ok();
        if !ok {
            self.refuse(Refusal::TooLarge(format!(
                "the registry sent more than {} bytes",
                self.policy.budget
            )));
        }
        ok
    }

    /// The checked addresses of `host:port`, or why none may be reached.
    async fn addresses(
        &self,
        host: &str,
        port: u16,
        plain: bool,
    ) -> Result<Vec<SocketAddr>, Refusal> {
        let insecure = self.policy.is_insecure(host, port);
        if plain && !insecure {
            return Err(self.refuse(Refusal::Address(format!(
                "plain HTTP to {host}:{port} refused: only a loopback registry named by --insecure-registry is reached without TLS"
            ))));
        }
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let resolved: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => {
                match tokio::time::timeout(
                    self.policy.connect_timeout,
                    tokio::net::lookup_host((host, port)),
                )
                .await
                {
                    Ok(Ok(addrs)) => addrs.collect(),
                    _ => {
                        return Err(
                            self.refuse(Refusal::Address(format!("{host} could not be resolved")))
                        );
                    }
                }
            }
        };
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|a| {
                if insecure {
                    a.ip().is_loopback()
                } else {
                    !is_private(a.ip())
                }
            })
            .collect();
        if allowed.is_empty() {
            let why = if insecure {
                format!(
                    "{host}:{port} is named by --insecure-registry but is not a loopback address"
                )
            } else {
                format!(
                    "{host}:{port} is a private, loopback or metadata address (only a loopback registry named by --insecure-registry is reached)"
                )
            };
            return Err(self.refuse(Refusal::Address(why)));
        }
        Ok(allowed)
    }
}

/// A gate open for one pull; closed when dropped.
pub struct Gate {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.closed.send_replace(true);
    }
}

impl Gate {
    /// Opens a gate on a free loopback port.
    pub async fn open(policy: Policy) -> std::io::Result<Gate> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let password: String = {
            use rand::Rng;
            let bytes: [u8; 24] = rand::rng().random();
            hex::encode(bytes)
        };
        let shared = Arc::new(Shared {
            left: AtomicU64::new(policy.budget),
            policy,
            password,
            refusal: Mutex::new(None),
            closed: tokio::sync::watch::channel(false).0,
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let shared = serving.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(Gate { shared, addr, task })
    }

    /// The proxy URL the registry client uses, password included.
    pub fn proxy_url(&self) -> String {
        format!("http://attune:{}@{}", self.shared.password, self.addr)
    }

    /// `text` without the gate's password (an error about the proxy may
    /// quote its URL).
    pub fn scrub(&self, text: &str) -> String {
        text.replace(&self.shared.password, "…")
    }

    /// The first refusal, if the gate refused anything.
    pub fn refusal(&self) -> Option<Refusal> {
        self.shared
            .refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

type Body = BoxBody<Bytes, hyper::Error>;

fn answer(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r
}

async fn handle(shared: Arc<Shared>, mut req: Request<Incoming>) -> Response<Body> {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("attune:{}", shared.password))
    );
    let authorized = req
        .headers_mut()
        .remove(hyper::header::PROXY_AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized {
        return answer(StatusCode::PROXY_AUTHENTICATION_REQUIRED, String::new());
    }
    let plain = req.method() != Method::CONNECT;
    let Some(host) = req.uri().host().map(str::to_string) else {
        return answer(StatusCode::BAD_REQUEST, "no host".into());
    };
    let port = req.uri().port_u16().unwrap_or(if plain { 80 } else { 443 });
    if plain && req.uri().scheme_str() != Some("http") {
        return answer(StatusCode::BAD_REQUEST, "not a proxy request".into());
    }
    let addrs = match shared.addresses(&host, port, plain).await {
        Ok(a) => a,
        Err(Refusal::Address(why) | Refusal::TooLarge(why) | Refusal::Unreachable(why)) => {
            return answer(StatusCode::FORBIDDEN, why);
        }
    };
    let upstream = match connect(&addrs, shared.policy.connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            let why = format!("{host}:{port}: {e}");
            shared.refuse(Refusal::Unreachable(why.clone()));
            return answer(StatusCode::BAD_GATEWAY, why);
        }
    };
    if plain {
        forward(shared, req, upstream).await
    } else {
        let tunnel = shared.clone();
        shared.spawn(async move {
            if let Ok(upgraded) = hyper::upgrade::on(req).await {
                relay(tunnel, TokioIo::new(upgraded), upstream).await;
            }
        });
        Response::new(Empty::new().map_err(|e| match e {}).boxed())
    }
}

async fn connect(
    addrs: &[SocketAddr],
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(std::io::ErrorKind::TimedOut.into()),
        }
    }
    Err(last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into()))
}

/// Copies a tunnel both ways, counting what comes from the registry.
async fn relay(
    shared: Arc<Shared>,
    client: TokioIo<hyper::upgrade::Upgraded>,
    upstream: tokio::net::TcpStream,
) {
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut up_read, mut up_write) = upstream.into_split();
    let to_registry = async {
        let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
        let _ = up_write.shutdown().await;
    };
    let from_registry = async {
        let mut buf = vec![0u8; 16 << 10];
        while let Ok(n) = up_read.read(&mut buf).await {
            if n == 0 || !shared.spend(n) || client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(to_registry, from_registry);
}

/// Sends a plain-HTTP request on to a loopback registry.
async fn forward(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    upstream: tokio::net::TcpStream,
) -> Response<Body> {
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(upstream)).await
    else {
        return answer(StatusCode::BAD_GATEWAY, "handshake failed".into());
    };
    shared.spawn(async move {
        let _ = conn.await;
    });
    let origin = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *req.uri_mut() = match origin.parse() {
        Ok(u) => u,
        Err(_) => return answer(StatusCode::BAD_REQUEST, "bad path".into()),
    };
    match sender.send_request(req).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(
                parts,
                Counted {
                    inner: body,
                    shared,
                }
                .boxed(),
            )
        }
        Err(e) => answer(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// A forwarded response body, counted against the pull's budget.
struct Counted {
    inner: Incoming,
    shared: Arc<Shared>,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, Bytes::len);
                if self.shared.spend(n) {
                    Poll::Ready(Some(Ok(frame)))
                } else {
                    // Ending early makes the client see a truncated body.
                    Poll::Ready(None)
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(insecure: &[&str]) -> Shared {
        Shared {
            policy: Policy {
                insecure: insecure.iter().map(|s| s.to_string()).collect(),
                budget: 10,
                connect_timeout: Duration::from_secs(1),
            },
            password: "x".into(),
            left: AtomicU64::new(10),
            refusal: Mutex::new(None),
            closed: tokio::sync::watch::channel(false).0,
        }
    }

    #[tokio::test]
    async fn refuses_metadata_and_loopback_unless_named_insecure() {
        let s = shared(&["127.0.0.1:5000"]);
        assert!(s.addresses("169.254.169.254", 443, false).await.is_err());
        assert!(s.addresses("127.0.0.1", 5001, false).await.is_err());
        assert!(s.addresses("10.0.0.1", 80, true).await.is_err());
        assert!(
            matches!(s.refusal.lock().unwrap().clone(), Some(Refusal::Address(m)) if m.contains("169.254.169.254"))
        );
        assert_eq!(
            s.addresses("127.0.0.1", 5000, true).await.unwrap(),
            vec!["127.0.0.1:5000".parse().unwrap()]
        );
    }

    /// Sends `CONNECT target` through the gate with `password`; the
    /// stream and the status line.
    async fn connect_through(
        gate: &Gate,
        target: &str,
        password: &str,
    ) -> (tokio::net::TcpStream, String) {
        let mut s = tokio::net::TcpStream::connect(gate.addr).await.unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("attune:{password}"));
        let head = format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        while !buf.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if s.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            buf.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&buf).to_string();
        (s, text.lines().next().unwrap_or_default().to_string())
    }

    #[tokio::test]
    async fn tunnels_only_with_the_password_and_only_within_the_budget() {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = c.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let gate = Gate::open(Policy {
            insecure: vec![target.clone()],
            budget: 8,
            connect_timeout: Duration::from_secs(1),
        })
        .await
        .unwrap();
        let (_, status) = connect_through(&gate, &target, "wrong").await;
        assert!(status.contains("407"), "{status}");
        let (_, status) = connect_through(&gate, "10.0.0.1:443", &gate.shared.password).await;
        assert!(status.contains("403"), "{status}");
        let (mut s, status) = connect_through(&gate, &target, &gate.shared.password).await;
        assert!(status.contains("200"), "{status}");
        s.write_all(b"12345").await.unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"12345");
        // Past the budget the tunnel closes.
        s.write_all(b"6789abcdef").await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
        assert!(rest.len() <= 3, "{rest:?}");
        assert!(matches!(
            gate.refusal(),
            Some(Refusal::Address(_)) | Some(Refusal::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn a_tunnel_ends_when_its_gate_closes() {
        // A registry that accepts and then says nothing keeps a tunnel open.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = silent.local_addr().unwrap().to_string();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        tokio::spawn(async move {
            while let Ok((c, _)) = silent.accept().await {
                keep.lock().unwrap().push(c);
            }
        });
        let gate = Gate::open(Policy {
            insecure: vec![target.clone()],
            budget: 1 << 20,
            connect_timeout: Duration::from_secs(1),
        })
        .await
        .unwrap();
        let (mut s, status) = connect_through(&gate, &target, &gate.shared.password).await;
        assert!(status.contains("200"), "{status}");
        let mut byte = [0u8; 1];
        let idle = tokio::time::timeout(Duration::from_millis(300), s.read(&mut byte)).await;
        assert!(idle.is_err(), "the tunnel is open and idle");
        drop(gate);
        let ended = tokio::time::timeout(Duration::from_secs(2), s.read(&mut byte)).await;
        assert!(
            matches!(ended, Ok(Ok(0)) | Ok(Err(_))),
            "the tunnel outlived its gate: {ended:?}"
        );
    }

    #[test]
    fn spending_past_the_budget_is_refused() {
        let s = shared(&[]);
        assert!(s.spend(6));
        assert!(!s.spend(6));
        assert!(matches!(
            s.refusal.lock().unwrap().clone(),
            Some(Refusal::TooLarge(_))
        ));
    }
}
