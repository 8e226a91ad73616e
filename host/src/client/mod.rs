//! A small HTTP client for the Attune API, used by the CLI's client commands.
//!
//! Errors from the server come back in the API's error shape and are turned
//! into [`ClientError::Api`], keeping every detail path for display.

pub mod worker;

use attune_runtime::PathError;
use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use std::time::Duration;

use serde_json::Value;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message}{}", render_details(.details))]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The error code.
        code: String,
        /// The message.
        message: String,
        /// Each problem with its path.
        details: Vec<PathError>,
    },
    /// The server could not be reached or answered nonsense.
    #[error("cannot talk to {server}: {}", chain(.source))]
    Transport {
        /// The server URL.
        server: String,
        /// The error.
        source: reqwest::Error,
    },
    /// No server or token configured.
    #[error("{0}")]
    Config(String),
}

/// An error with its causes (a TLS failure is a cause of a send error).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn render_details(details: &[PathError]) -> String {
    details
        .iter()
        .map(|PathError { path, message }| {
            format!(
                "\n  {}: {message}",
                if path.is_empty() { "/" } else { path }
            )
        })
        .collect()
}

/// Where `attune login` keeps the server URL and token.
pub fn config_path() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|base| base.join("attune").join("config.toml"))
}

/// Saved login.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedLogin {
    /// Server URL.
    pub server: Option<String>,
    /// API token.
    pub token: Option<String>,
}

impl SavedLogin {
    /// Reads the saved login, if any.
    pub fn load() -> Result<Self, ClientError> {
        let Some(path) = config_path() else {
            return Ok(Self::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| ClientError::Config(format!("{}: {e}", path.display()))),
            Err(_) => Ok(Self::default()),
        }
    }

    /// Writes the login, readable by its owner only.
    pub fn save(&self) -> Result<PathBuf, ClientError> {
        let path = config_path().ok_or_else(|| ClientError::Config("no home directory".into()))?;
        let io = |e: std::io::Error| ClientError::Config(format!("{}: {e}", path.display()));
        std::fs::create_dir_all(path.parent().expect("config path has a parent")).map_err(io)?;
        let text = toml::to_string(self).map_err(|e| ClientError::Config(e.to_string()))?;
        attune_util::files::write_private(&path, &text).map_err(io)?;
        Ok(path)
    }
}

/// `k=v&k2=v2` with every key and value URL-encoded, for query strings
/// built from user input.
pub fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A client for one server and token.
#[derive(Debug, Clone)]
pub struct Client {
    server: String,
    token: String,
    http: reqwest::Client,
    /// For the console's login, whose cookie comes with a redirect.
    no_redirects: reqwest::Client,
}

impl Client {
    /// A client for `server` authenticating with `token`, trusting the
    /// webpki roots for `https://`.
    pub fn new(server: &str, token: &str) -> Self {
        Self::with_ca(server, token, None).expect("the default TLS settings are valid")
    }

    /// A client that also trusts the certificates in `ca` (a private CA).
    pub fn with_ca(
        server: &str,
        token: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, ClientError> {
        let tls = attune_util::tls::client_config(ca)
            .map_err(|e| ClientError::Config(format!("--ca-cert: {e:#}")))?;
        let build = |redirects| {
            reqwest::Client::builder()
                .use_preconfigured_tls(tls.clone())
                .redirect(redirects)
                .build()
                .map_err(|e| ClientError::Config(format!("the HTTP client: {e}")))
        };
        Ok(Self {
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: build(reqwest::redirect::Policy::default())?,
            no_redirects: build(reqwest::redirect::Policy::none())?,
        })
    }

    /// Sends a request and returns the JSON body (or `null` for 204).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<Value, ClientError> {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.server))
            .bearer_auth(&self.token);
        request = match body {
            None => request,
            Some(Body::Json(v)) => request.json(&v),
            Some(Body::Bytes {
                content_type,
                bytes,
            }) => request.header("content-type", content_type).body(bytes),
            Some(Body::Signed { bytes, signature }) => request
                .header("content-type", "application/json")
                .header(
                    attune_engine::triggers::webhook::SIGNATURE_HEADER,
                    signature,
                )
                .body(bytes),
        };
        let transport = |source| ClientError::Transport {
            server: self.server.clone(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let text = response.text().await.map_err(transport)?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let error = &value["error"];
        Err(ClientError::Api {
            status,
            code: error["code"].as_str().unwrap_or("unknown").to_string(),
            message: error["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{status}: {text}")),
            details: error["details"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .map(|x| {
                            PathError::new(
                                x["path"].as_str().unwrap_or_default(),
                                x["message"].as_str().unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// GET `path` as raw bytes.
    pub async fn bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let transport = |source| ClientError::Transport {
            server: self.server.clone(),
            source,
        };
        let response = self
            .http
            .get(format!("{}/api/v1{path}", self.server))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        Err(ClientError::Api {
            status,
            code: "download_failed".into(),
            message: format!("{status}: {}", String::from_utf8_lossy(&bytes)),
            details: Vec::new(),
        })
    }

    /// Signs in to the console with the token; the session cookie
    /// (`name=value`) for [`Client::page`].
    pub async fn console_session(&self) -> Result<String, ClientError> {
        let transport = |source| ClientError::Transport {
            server: self.server.clone(),
            source,
        };
        let response = self
            .no_redirects
            .post(format!("{}/ui/login", self.server))
            .header(reqwest::header::ORIGIN, &self.server)
            .form(&[("token", &self.token)])
            .send()
            .await
            .map_err(transport)?;
        response
            .headers()
            .get(reqwest::header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
            .ok_or_else(|| ClientError::Api {
                status: response.status(),
                code: "unauthorized".into(),
                message: "the console refused the token".into(),
                details: Vec::new(),
            })
    }

    /// GETs console page `path` with `cookie`, reading it whole; its status
    /// and how long that took.
    pub async fn page(
        &self,
        path: &str,
        cookie: &str,
    ) -> Result<(reqwest::StatusCode, Duration), ClientError> {
        let transport = |source| ClientError::Transport {
            server: self.server.clone(),
            source,
        };
        let began = std::time::Instant::now();
        let response = self
            .http
            .get(format!("{}{path}", self.server))
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        response.bytes().await.map_err(transport)?;
        Ok((status, began.elapsed()))
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// POST JSON to `path`.
    pub async fn post(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.call(Method::POST, path, Some(Body::Json(body))).await
    }
}

/// A request body.
pub enum Body {
    /// JSON.
    Json(Value),
    /// Raw bytes with a content type.
    Bytes {
        /// e.g. `application/wasm`.
        content_type: &'static str,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A JSON document signed for webhook intake (`X-Hub-Signature-256`).
    Signed {
        /// The document's bytes, exactly as signed.
        bytes: Vec<u8>,
        /// `sha256=<hex>`.
        signature: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_encode_what_users_type() {
        assert_eq!(
            query([("rule", "ops.deploy"), ("action", "a b&c=d/é")]),
            "rule=ops.deploy&action=a+b%26c%3Dd%2F%C3%A9"
        );
    }
}
