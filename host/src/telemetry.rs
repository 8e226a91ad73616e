//! Exporting traces: `--otlp-endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (and `_TRACES_ENDPOINT`), turns tracing on
//! for `attune serve` and `attune worker`. Spans go over OTLP/HTTP with
//! protobuf bodies through the SDK's batch processor; the sampler
//! (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`), the service name
//! (`OTEL_SERVICE_NAME`, default `attune`) and the exporter's headers and
//! timeout (`OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`) come from the
//! standard variables.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use attune_engine::telemetry::Telemetry;
use clap::Args;
use opentelemetry_http::{Bytes, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};

/// Tracing options of `attune serve` and `attune worker`.
#[derive(Debug, Clone, Default, Args)]
pub struct TracingArgs {
    /// Export traces over OTLP/HTTP (protobuf) to this collector, e.g.
    /// `http://127.0.0.1:4318` (spans are posted to `/v1/traces` under
    /// it). Default: `OTEL_EXPORTER_OTLP_ENDPOINT`; tracing is off when
    /// neither is set.
    #[arg(long, env = "ATTUNE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// The variables that turn tracing on without `--otlp-endpoint`.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Starts exporting spans when asked to (`service`: the default service
/// name); `None` when tracing is off. `ca` is also trusted for an HTTPS
/// collector.
pub fn start(
    args: &TracingArgs,
    service: &str,
    ca: Option<&Path>,
) -> anyhow::Result<Option<Arc<Telemetry>>> {
    let from_env = ENDPOINT_VARS
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()));
    if args.otlp_endpoint.is_none() && !from_env {
        return Ok(None);
    }
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Ok(p) = std::env::var(var)
            && p != "http/protobuf"
        {
            anyhow::bail!("{var}={p}: Attune exports traces over http/protobuf only");
        }
    }
    let tls = attune_util::tls::client_config(ca)?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let http = OnRuntime {
        client,
        runtime: tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("tracing starts inside the server's runtime"))?,
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(http);
    if let Some(base) = &args.otlp_endpoint {
        let url = reqwest::Url::parse(base)
            .map_err(|e| anyhow::anyhow!("--otlp-endpoint {base}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!("--otlp-endpoint {base}: expected an http:// or https:// URL");
        }
        let path = format!("{}/v1/traces", base.trim_end_matches('/'));
        exporter = exporter.with_endpoint(path);
    }
    let exporter = exporter.build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_string());
    }
    let provider = attune_engine::telemetry::provider_builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    Ok(Some(Arc::new(Telemetry::new(provider))))
}

/// The most of a collector's answer read.
const MAX_ANSWER: usize = 64 << 10;

/// The exporter's HTTP client: the SDK's batch processor exports from its
/// own thread, so each request is sent on the server's Tokio runtime with
/// the reqwest client (and TLS roots) the rest of Attune uses, and the
/// processor's thread waits for the answer. (The exporter's own clients
/// would add a second HTTP stack or a blocking one.)
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))?;
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let mut answer = Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                headers.extend(
                    response
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
            }
            // A collector answers with a few bytes; read no more than
            // this of whatever it sends.
            let mut response = response;
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_ANSWER {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, opentelemetry_http::HttpError>(answer.body(Bytes::from(body))?)
        });
        sent.await?
    }
}
