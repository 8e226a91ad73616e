//! `core.webhook`: signed deliveries turned into events.
//!
//! A delivery is authenticated GitHub-style: `X-Hub-Signature-256:
//! sha256=<hex HMAC-SHA256 of the raw body>` with the `secret` of a rule on
//! `core.webhook` whose hook name (`trigger_params.name`, or its ref)
//! matches. The event it makes reaches only the rules whose secret verified
//! it, and enters through the engine's event door like any other.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::engine::ingest::{Admitted, IncomingEvent};
use crate::engine::rules::render::single_expression;
use crate::engine::{Core, EngineError};
use crate::storage::{Page, RuleFilter, RuleRecord, RuleSpec};

/// Largest body accepted.
pub const MAX_WEBHOOK_BYTES: usize = 1 << 20;

/// The header holding the body's signature.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No signature, a wrong one, or no rule listens to the hook: the same
    /// answer for all three, so hook names cannot be probed.
    #[error("a valid signature is required")]
    Unauthenticated,
    /// The hook (or, for names no rule listens to, all of them together)
    /// received more deliveries than `attune serve --webhook-rate` allows.
    #[error("too many deliveries to this hook; retry later")]
    Throttled,
    /// Recording failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The signature header value for `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn verifies(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    // Constant-time comparison.
    mac.verify_slice(&expected).is_ok()
}

/// What the API shows in place of a literal webhook key.
pub const MASK: &str = "********";

/// The secret a webhook key refers to: `NAME` of `{{ secrets.NAME }}`.
pub fn secret_reference(key: &str) -> Option<&str> {
    let name = single_expression(key)?.strip_prefix("secrets.")?;
    crate::engine::secrets::valid_name(name).then_some(name)
}

/// The secret a webhook rule's literal key moves into: `webhook_` and the
/// rule's ref with every other character than a letter or digit as `_`
/// (so it reads as `secrets.NAME` in a template too).
fn key_secret_name(rule: &str) -> String {
    let tail: String = rule
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("webhook_{tail}")
}

/// `spec` with its literal webhook key moved into the secret
/// `webhook_<pack>_<rule>` and referred to as `{{ secrets.NAME }}`, so no
/// key is stored in the clear; `None` when it holds no literal key.
pub async fn seal_literal_key(
    core: &Core,
    spec: &RuleSpec,
) -> Result<Option<RuleSpec>, EngineError> {
    let literal = match spec.trigger_params.get("secret").and_then(Value::as_str) {
        Some(key) if spec.trigger == "core.webhook" && secret_reference(key).is_none() => key,
        _ => return Ok(None),
    };
    let name = key_secret_name(&spec.r#ref);
    crate::engine::secrets::set(core, &name, literal).await?;
    let mut spec = spec.clone();
    spec.trigger_params["secret"] = Value::String(format!("{{{{ secrets.{name} }}}}"));
    Ok(Some(spec))
}

/// Moves every literal webhook key still stored (saved before keys became
/// secrets) into a secret; returns how many rules changed. Run at start.
pub async fn seal_literal_keys(core: &Core) -> Result<usize, EngineError> {
    let filter = RuleFilter {
        trigger: Some("core.webhook".into()),
        ..RuleFilter::default()
    };
    let mut page = Page {
        limit: Some(500),
        after: None,
    };
    let mut changed = 0;
    loop {
        let rules = core.storage.list_rules(&filter, &page).await?;
        let Some(last) = rules.last() else {
            break;
        };
        page.after = Some(last.spec.r#ref.clone());
        for rule in &rules {
            if let Some(spec) = seal_literal_key(core, &rule.spec).await? {
                core.storage.update_rule(&rule.spec.r#ref, &spec).await?;
                changed += 1;
            }
        }
    }
    if changed > 0 {
        core.cache.rules_changed();
    }
    Ok(changed)
}

/// A rule's trigger parameters as the API shows them: a literal webhook key
/// is masked (a key in the clear would let any reader forge deliveries); a
/// `{{ secrets.NAME }}` reference is shown as it is.
pub fn masked(trigger: &str, params: &Value) -> Value {
    let mut params = params.clone();
    if trigger == "core.webhook"
        && let Some(key) = params.get_mut("secret")
        && key.as_str().is_some_and(|k| secret_reference(k).is_none())
    {
        *key = Value::String(MASK.into());
    }
    params
}

/// The key a rule verifies deliveries with: its literal, or the value of
/// the secret it refers to (`None` when that secret is gone).
async fn key_of(
    core: &Core,
    rule: &RuleRecord,
) -> Result<Option<zeroize::Zeroizing<String>>, EngineError> {
    let Some(key) = rule.spec.trigger_params["secret"].as_str() else {
        return Ok(None);
    };
    match secret_reference(key) {
        Some(name) => crate::engine::secrets::reveal(core, name).await,
        None => Ok(Some(zeroize::Zeroizing::new(key.to_string()))),
    }
}

/// The hook a webhook rule listens to: its `name`, else its ref.
fn hook_of(rule: &RuleRecord) -> &str {
    rule.spec.trigger_params["name"]
        .as_str()
        .unwrap_or(&rule.spec.r#ref)
}

/// A token bucket per hook name: `rate` deliveries a second, `2 × rate`
/// at once after a quiet spell (`attune serve --webhook-rate`). Written
/// here rather than taken from a rate-limiting crate: the keys are bounded
/// by the hooks rules listen to (unknown names share one key), so this is
/// a map of two numbers each and no eviction is needed.
pub struct HookLimiter {
    rate: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
}

impl HookLimiter {
    /// A limiter of `rate` deliveries a second per hook.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            buckets: std::sync::Mutex::default(),
        }
    }

    /// Deliveries a hook accepts at once after a quiet spell.
    pub fn burst(&self) -> usize {
        (self.rate * 2.0) as usize
    }

    /// Whether one more delivery to `hook` is allowed now.
    pub fn allow(&self, hook: &str) -> bool {
        let now = std::time::Instant::now();
        let burst = self.rate * 2.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = buckets.entry(hook.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The enabled rules on hook `name` whose key verifies `signature`.
async fn verified(
    core: &Core,
    rules: Vec<RuleRecord>,
    name: &str,
    body: &[u8],
    signature: &str,
) -> Result<Vec<RuleRecord>, EngineError> {
    let mut out = Vec::new();
    for rule in rules {
        if hook_of(&rule) != name {
            continue;
        }
        if key_of(core, &rule)
            .await?
            .is_some_and(|key| verifies(&key, body, signature))
        {
            out.push(rule);
        }
    }
    Ok(out)
}

/// The event payload of a delivery: `{"body", "headers"}`, the body parsed
/// as JSON when it is JSON (else kept as text), and the headers a receiver
/// usually needs (`x-*` but the signature, `content-type`, `user-agent`).
fn payload<'a>(body: &[u8], headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    let parsed: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    let mut kept = Map::new();
    for (k, v) in headers {
        if (k.starts_with("x-") && k != SIGNATURE_HEADER)
            || k == "content-type"
            || k == "user-agent"
        {
            kept.insert(k.to_string(), Value::String(v.to_string()));
        }
    }
    serde_json::json!({"body": parsed, "headers": kept})
}

/// Verifies a delivery to hook `name` and records its event for the rules
/// that verified it. `headers` are lowercase names with their values;
/// nothing is stored when the signature does not verify.
pub async fn receive<'a>(
    core: &Core,
    name: &str,
    signature: Option<&str>,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    body: &[u8],
) -> Result<Admitted, WebhookError> {
    let rules = core
        .cache
        .enabled_rules(&core.storage, "core.webhook")
        .await
        .map_err(EngineError::from)?;
    let known = rules.iter().any(|r| hook_of(r) == name);
    // Names no rule listens to share one bucket, so probing names cannot
    // grow the limiter.
    if !core.hooks.allow(if known { name } else { "" }) {
        return Err(WebhookError::Throttled);
    }
    let signature = signature.ok_or(WebhookError::Unauthenticated)?;
    if !known {
        // The same work as a known hook with a wrong signature (a sealed key
        // copied out of the read cache and opened, then an HMAC of the
        // body), so the answer's timing does not tell whether the hook
        // exists, and nothing reads the database for it.
        let _ = verifies(&core.secrets.open_decoy(), body, signature);
        return Err(WebhookError::Unauthenticated);
    }
    let rules = verified(core, rules, name, body, signature).await?;
    if rules.is_empty() {
        return Err(WebhookError::Unauthenticated);
    }
    let event = IncomingEvent {
        trigger: "core.webhook".into(),
        payload: payload(body, headers),
        source: Some(name.to_string()),
        rules: Some(rules),
        depth: 0,
    };
    Ok(core.ingest.event(core, event).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_right_secret_and_body() {
        let sig = sign("s3cret-s3cret-s3cret", b"{\"a\":1}");
        assert!(verifies("s3cret-s3cret-s3cret", b"{\"a\":1}", &sig));
        assert!(!verifies("other-secret-other", b"{\"a\":1}", &sig));
        assert!(!verifies("s3cret-s3cret-s3cret", b"{\"a\":2}", &sig));
        assert!(!verifies("s3cret-s3cret-s3cret", b"{\"a\":1}", "sha1=abc"));
        assert!(!verifies("s3cret-s3cret-s3cret", b"{\"a\":1}", "sha256=zz"));
    }

    #[test]
    fn a_hook_gets_its_burst_then_its_rate() {
        let limiter = HookLimiter::new(100);
        let burst = limiter.burst();
        let allowed = (0..burst + 50).filter(|_| limiter.allow("gh")).count();
        assert!((burst..burst + 5).contains(&allowed), "{allowed}");
        assert!(limiter.allow("other"), "each hook has its own bucket");
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(limiter.allow("gh"), "the bucket refills");
    }

    #[test]
    fn literal_keys_are_masked_and_references_shown() {
        let literal = serde_json::json!({"name": "gh", "secret": "s3cret-s3cret-s3cret"});
        assert_eq!(masked("core.webhook", &literal)["secret"], MASK);
        assert_eq!(masked("core.webhook", &literal)["name"], "gh");
        let reference = serde_json::json!({"secret": "{{ secrets.gh_hook }}"});
        assert_eq!(masked("core.webhook", &reference), reference);
        assert_eq!(secret_reference("{{secrets.gh_hook}}"), Some("gh_hook"));
        assert_eq!(secret_reference("{{ secrets.bad name }}"), None);
        assert_eq!(secret_reference("plain"), None);
        let other = serde_json::json!({"secret": "not a webhook"});
        assert_eq!(masked("core.manual", &other), other);
    }

    #[test]
    fn payloads_keep_the_body_and_useful_headers_but_not_the_signature() {
        let p = payload(
            b"{\"a\":1}",
            [
                ("x-github-event", "push"),
                (SIGNATURE_HEADER, "sha256=00"),
                ("authorization", "Bearer x"),
                ("content-type", "application/json"),
            ],
        );
        assert_eq!(
            p,
            serde_json::json!({"body": {"a": 1}, "headers": {"x-github-event": "push", "content-type": "application/json"}})
        );
        assert_eq!(payload(b"plain", [])["body"], "plain");
    }
}
