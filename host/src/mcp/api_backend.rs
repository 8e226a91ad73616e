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

    async fn inquiries(&self, _: &RequestContext<RoleServer>) -> Result<Vec<Value>, Refusal> {
        let page = self.client.get("/inquiries").await.map_err(refusal)?;
        Ok(page["items"].as_array().cloned().unwrap_or_default())
    }

    async fn respond(
        &self,
        _: &RequestContext<RoleServer>,
        id: i64,
        answer: Value,
    ) -> Result<Value, Refusal> {
        self.client
            .post(&format!("/inquiries/{id}/respond"), answer)
            .await
            .map_err(refusal)
    }

    fn may_list(&self, _: &RequestContext<RoleServer>) -> Result<(), Refusal> {
        Ok(())
    }
}

/// How often `attune mcp` looks at the server's packs and the open asks
/// the token may answer, to tell its client when the tools changed.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The server's packs (name, version, digest), to notice a change.
async fn packs(client: &Client) -> Option<Vec<(Value, Value, Value)>> {
    let page = client.get("/packs?limit=500").await.ok()?;
    let items = page["items"].as_array()?;
    Some(
        items
            .iter()
            .map(|p| (p["name"].clone(), p["version"].clone(), p["digest"].clone()))
            .collect(),
    )
}

/// The ids of the open asks the token may answer (`attune.respond` is
/// offered while there is one, and its description lists them).
async fn asks(client: &Client) -> Option<Vec<Value>> {
    let page = client.get("/inquiries").await.ok()?;
    Some(
        page["items"]
            .as_array()?
            .iter()
            .map(|i| i["id"].clone())
            .collect(),
    )
}

/// What the tools are made of: the packs and the open asks.
async fn tools_state(client: &Client) -> Option<(Vec<(Value, Value, Value)>, Vec<Value>)> {
    Some((packs(client).await?, asks(client).await.unwrap_or_default()))
}

/// Tells the clients in `peers` when the server's packs or the open asks
/// change.
async fn watch(client: Client, peers: Arc<super::Peers>) {
    let mut known = tools_state(&client).await;
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        let now = tools_state(&client).await;
        if now.is_none() || now == known {
            continue;
        }
        known = now;
        let clients: Vec<_> = peers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for peer in clients {
            let _ = peer.notify_tool_list_changed().await;
        }
    }
}

/// Serves the tools on stdin/stdout until the client disconnects, telling
/// it when the server's packs (and so the tools) change.
pub async fn serve_stdio(client: Client, options: Options) -> anyhow::Result<()> {
    let peers: Arc<super::Peers> = Arc::default();
    let watcher = tokio::spawn(watch(client.clone(), peers.clone()));
    let server = Attune::announcing(Arc::new(Remote { client }), Arc::new(options), peers);
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("starting the MCP session: {e}"))?;
    let ended = running.waiting().await;
    watcher.abort();
    ended.map_err(|e| anyhow::anyhow!("MCP session: {e}"))?;
    Ok(())
}
