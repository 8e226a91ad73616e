//! `attune mcp`: the tools over stdio for desktop agents, backed by a
//! server's API with a token (the server checks the token's role).

use std::sync::Arc;

use async_trait::async_trait;
use rmcp::ServiceExt;
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Value, json};

use super::{Attune, Backend, Options, Refusal};
use crate::client::{Client, ClientError, query};

/// A server's API as the tools' backend.
pub struct Remote {
    client: Client,
}

fn refusal(e: ClientError) -> Refusal {
    match e {
        ClientError::Api {
            code,
            message,
            details,
            ..
        } => Refusal {
            code,
            message,
            details,
        },
        other => Refusal {
            code: "unavailable".into(),
            message: other.to_string(),
            details: Vec::new(),
        },
    }
}

#[async_trait]
impl Backend for Remote {
    async fn actions(&self, after: Option<&str>) -> Result<(Vec<Value>, Option<String>), Refusal> {
        let mut path = "/actions?limit=100".to_string();
        if let Some(after) = after {
            path.push('&');
            path.push_str(&query([("after", after)]));
        }
        let page = self.client.get(&path).await.map_err(refusal)?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        Ok((items, page["next"].as_str().map(str::to_string)))
    }

    async fn run(
        &self,
        _: &RequestContext<RoleServer>,
        action: &str,
        params: Value,
    ) -> Result<Value, Refusal> {
        self.client
            .post(
                "/executions",
                json!({"action": action, "params": params, "source": "mcp"}),
            )
            .await
            .map_err(refusal)
    }

    async fn execution(&self, _: &RequestContext<RoleServer>, id: i64) -> Result<Value, Refusal> {
        self.client
            .get(&format!("/executions/{id}"))
            .await
            .map_err(refusal)
    }

    async fn cancel(&self, _: &RequestContext<RoleServer>, id: i64) -> Result<(), Refusal> {
        self.client
            .post(&format!("/executions/{id}/cancel"), json!({}))
            .await
            .map(|_| ())
            .map_err(refusal)
    }

    fn may_list(&self, _: &RequestContext<RoleServer>) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Serves the tools on stdin/stdout until the client disconnects.
pub async fn serve_stdio(client: Client, options: Options) -> anyhow::Result<()> {
    let server = Attune::new(Arc::new(Remote { client }), Arc::new(options));
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("starting the MCP session: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| anyhow::anyhow!("MCP session: {e}"))?;
    Ok(())
}
