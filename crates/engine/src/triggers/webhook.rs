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

use crate::ingest::{Admitted, IncomingEvent};
use crate::rules::render::single_expression;
use crate::{Core, EngineError};
use attune_storage::{Page, RuleFilter, RuleRecord, RuleSpec};

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
    crate::secrets::valid_name(name).then_some(name)
}

/// The secret holding rule `rule`'s own key: `webhook:<rule ref>`. The
/// map is injective (the prefix is fixed and a ref is kept whole), and the
/// name is in a namespace no admin and no other rule can write (see
/// [`crate::secrets::WEBHOOK_KEY_PREFIX`]).
pub fn key_name(rule: &str) -> String {
    format!("{}{rule}", crate::secrets::WEBHOOK_KEY_PREFIX)
}

/// How a rule's `trigger_params.secret` refers to its own key. A name with
/// a `:` cannot be written `secrets.NAME`, hence the index form.
fn own_key_reference(rule: &str) -> String {
    format!("{{{{ secrets[\"{}\"] }}}}", key_name(rule))
}

/// The rule whose own key a webhook key refers to: `REF` of
/// `{{ secrets["webhook:REF"] }}`.
pub fn own_key_of(key: &str) -> Option<&str> {
    let inner = single_expression(key)?
        .strip_prefix("secrets")?
        .trim_start()
        .strip_prefix('[')?
        .strip_suffix(']')?
        .trim();
    let quoted = |q: char| inner.strip_prefix(q).and_then(|s| s.strip_suffix(q));
    let name = quoted('"').or_else(|| quoted('\''))?;
    let rule = name.strip_prefix(crate::secrets::WEBHOOK_KEY_PREFIX)?;
    crate::rules::valid_ref(rule).then_some(rule)
}

/// The secret that literal keys moved into before keys had a namespace of
/// their own: `webhook_` and the ref with every character but letters and
/// digits as `_`. Two refs could share it (`ops.deploy_hook` and
/// `ops_deploy.hook`) and any admin could overwrite it; it is read only to
/// move such keys (see [`seal_literal_keys`]).
fn legacy_key_name(rule: &str) -> String {
    let tail: String = rule
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("webhook_{tail}")
}

fn key_error(message: String) -> EngineError {
    EngineError::invalid(
        "the rule is invalid",
        "",
        vec![attune_runtime::PathError::new(
            "/trigger_params/secret",
            message,
        )],
    )
}

/// What saving a rule does to webhook keys, worked out before the rule is
/// written and applied ([`settle_key`]) once it is.
pub struct KeyPlan {
    /// The rule to store: a literal key replaced by the reference to the
    /// rule's own key.
    pub spec: RuleSpec,
    /// The value the rule's own key takes (a new literal, or the key of the
    /// rule it renames).
    value: Option<zeroize::Zeroizing<String>>,
    /// Own keys no rule will use once it is written.
    stale: Vec<String>,
}

/// Plans the webhook key of `spec`, which replaces the rule stored as
/// `replacing` (`None` when it is new).
///
/// A literal key becomes the rule's own key (`webhook:<ref>`), referred to
/// as `{{ secrets["webhook:<ref>"] }}`, so no key is stored in the clear. A
/// rule may refer only to the key of the rule it replaces (what reading it
/// and sending it back does, renamed or not: the key follows the rule),
/// never to another rule's. A rule that keeps no own key (another trigger,
/// or a `{{ secrets.NAME }}` reference) leaves none behind.
pub async fn plan_key(
    core: &Core,
    spec: &RuleSpec,
    replacing: Option<&str>,
) -> Result<KeyPlan, EngineError> {
    let own = key_name(&spec.r#ref);
    let previous = replacing.map(key_name).filter(|p| *p != own);
    let key = match spec.trigger_params.get("secret").and_then(Value::as_str) {
        Some(key) if spec.trigger == "core.webhook" && secret_reference(key).is_none() => key,
        _ => {
            return Ok(KeyPlan {
                spec: spec.clone(),
                value: None,
                stale: [Some(own)]
                    .into_iter()
                    .chain([previous])
                    .flatten()
                    .collect(),
            });
        }
    };
    let mut sealed = spec.clone();
    sealed.trigger_params["secret"] = Value::String(own_key_reference(&spec.r#ref));
    let Some(holder) = own_key_of(key) else {
        return Ok(KeyPlan {
            spec: sealed,
            value: Some(zeroize::Zeroizing::new(key.to_string())),
            stale: previous.into_iter().collect(),
        });
    };
    if replacing != Some(holder) {
        return Err(key_error(format!(
            "`{}` is the key of rule `{holder}`; a rule may refer only to its own key \
             (give a literal key, or a secret as {{{{ secrets.NAME }}}})",
            key_name(holder)
        )));
    }
    let value = crate::secrets::reveal(core, &key_name(holder))
        .await?
        .ok_or_else(|| {
            key_error(format!(
                "rule `{holder}` has no key to keep; give a literal key"
            ))
        })?;
    // Kept in place, or moved along with a renamed rule.
    let moved = holder != spec.r#ref;
    Ok(KeyPlan {
        spec: sealed,
        value: moved.then_some(value),
        stale: previous.into_iter().collect(),
    })
}

/// Applies a [`KeyPlan`] once its rule is written: stores the rule's own
/// key and deletes the keys no rule uses any more. Written after the rule,
/// so a save that fails (a ref already taken) changes no key.
pub async fn settle_key(core: &Core, plan: &KeyPlan) -> Result<(), EngineError> {
    if let Some(value) = &plan.value {
        crate::secrets::put(core, &key_name(&plan.spec.r#ref), value).await?;
    }
    for name in &plan.stale {
        // Looked up first: most saves (every rule on another trigger) have
        // no key to delete, and a read costs the one writer nothing.
        if core.storage.get_secret(name).await?.is_some() {
            crate::secrets::remove(core, name).await?;
        }
    }
    Ok(())
}

/// Deletes rule `rule`'s own webhook key, when it is deleted.
pub async fn drop_key(core: &Core, rule: &str) -> Result<(), EngineError> {
    crate::secrets::remove(core, &key_name(rule)).await?;
    Ok(())
}

/// Gives every webhook rule still keyed the old ways a key of its own: a
/// literal stored in the clear (saved before keys became secrets), or the
/// secret `webhook_<pack>_<rule>` such keys were moved into before keys
/// had a namespace (re-sealed, since a sealed value is bound to its name).
/// Returns how many rules changed. Run at start; a second run finds
/// nothing to do, and one interrupted halfway is finished by the next.
pub async fn seal_literal_keys(core: &Core) -> Result<usize, EngineError> {
    let mut changed = 0;
    let mut legacy: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for rule in all_rules(core, Some("core.webhook")).await? {
        let r#ref = &rule.spec.r#ref;
        let Some(key) = rule
            .spec
            .trigger_params
            .get("secret")
            .and_then(Value::as_str)
        else {
            continue;
        };
        let value = match secret_reference(key) {
            Some(name) if name == legacy_key_name(r#ref) => {
                match crate::secrets::reveal(core, name).await? {
                    Some(value) => {
                        legacy
                            .entry(name.to_string())
                            .or_default()
                            .push(r#ref.clone());
                        value
                    }
                    // Moved by another node meanwhile, or deleted: nothing to move.
                    None => continue,
                }
            }
            Some(_) => continue,
            None if own_key_of(key).is_some() => continue,
            None => zeroize::Zeroizing::new(key.to_string()),
        };
        crate::secrets::put(core, &key_name(r#ref), &value).await?;
        let mut spec = rule.spec.clone();
        spec.trigger_params["secret"] = Value::String(own_key_reference(r#ref));
        core.storage.update_rule(r#ref, &spec).await?;
        changed += 1;
    }
    if !legacy.is_empty() {
        for (name, moved) in legacy {
            if moved.len() > 1 {
                tracing::warn!(secret = %name, rules = ?moved,
                    "these webhook rules shared one key under the old naming; each keeps a copy of it as its own: set a new key on each");
            }
            // The old secret stays: a rule saved today may name a secret
            // an admin set under the same pattern (and workflows and packs
            // read secrets by name too), so only an admin deletes it.
            tracing::info!(secret = %name, rules = ?moved,
                "webhook keys copied into each rule's own key; the old secret is no longer needed by them and stays until an admin deletes it");
        }
    }
    if changed > 0 {
        core.cache.rules_changed();
    }
    Ok(changed)
}

/// Every stored rule (on `trigger` when given), a page at a time.
async fn all_rules(core: &Core, trigger: Option<&str>) -> Result<Vec<RuleRecord>, EngineError> {
    let filter = RuleFilter {
        trigger: trigger.map(str::to_string),
        ..RuleFilter::default()
    };
    let mut page = Page {
        limit: Some(500),
        after: None,
    };
    let mut out = Vec::new();
    loop {
        let rules = core.storage.list_rules(&filter, &page).await?;
        let Some(last) = rules.last() else {
            break;
        };
        page.after = Some(last.spec.r#ref.clone());
        out.extend(rules);
    }
    Ok(out)
}

/// A rule's trigger parameters as the API shows them: a literal webhook key
/// is masked (a key in the clear would let any reader forge deliveries); a
/// reference, to a secret or to the rule's own key, is shown as it is.
pub fn masked(trigger: &str, params: &Value) -> Value {
    let mut params = params.clone();
    if trigger == "core.webhook"
        && let Some(key) = params.get_mut("secret")
        && key
            .as_str()
            .is_some_and(|k| secret_reference(k).is_none() && own_key_of(k).is_none())
    {
        *key = Value::String(MASK.into());
    }
    params
}

/// The key a rule verifies deliveries with: its own key, the value of the
/// secret it refers to, or a literal (`None` when that secret is gone, or
/// the key named is another rule's).
async fn key_of(
    core: &Core,
    rule: &RuleRecord,
) -> Result<Option<zeroize::Zeroizing<String>>, EngineError> {
    let Some(key) = rule.spec.trigger_params["secret"].as_str() else {
        return Ok(None);
    };
    if let Some(holder) = own_key_of(key) {
        if holder != rule.spec.r#ref {
            return Ok(None);
        }
        return crate::secrets::reveal(core, &key_name(holder)).await;
    }
    match secret_reference(key) {
        Some(name) => crate::secrets::reveal(core, name).await,
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
    headers: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
    body: &[u8],
) -> Result<Admitted, WebhookError> {
    // Sent by an action (its host sets the header): one deeper than it.
    let depth = attune_runtime::http::chain_depth(headers.clone());
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
        depth,
        trace: None,
        requested_by: None,
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
        let own = serde_json::json!({"secret": own_key_reference("ops.deploy_hook")});
        assert_eq!(
            masked("core.webhook", &own),
            own,
            "a rule's own key is named, not shown"
        );
    }

    #[test]
    fn each_rule_has_its_own_key_name_that_no_secret_name_can_take() {
        // The refs whose old names collided.
        assert_eq!(
            legacy_key_name("ops.deploy_hook"),
            legacy_key_name("ops_deploy.hook")
        );
        assert_ne!(key_name("ops.deploy_hook"), key_name("ops_deploy.hook"));
        assert_eq!(key_name("ops.deploy_hook"), "webhook:ops.deploy_hook");
        assert!(!crate::secrets::valid_name(&key_name("ops.deploy_hook")));
        assert!(crate::secrets::is_rule_key(&key_name("a.b")));
        for r in ["ops.deploy_hook", "ops_deploy.hook", "a-b.c.d"] {
            assert_eq!(own_key_of(&own_key_reference(r)), Some(r));
        }
        assert_eq!(own_key_of("{{ secrets['webhook:a.b'] }}"), Some("a.b"));
        assert_eq!(own_key_of("{{ secrets[\"webhook:A b\"] }}"), None);
        assert_eq!(own_key_of("{{ secrets[\"gh_hook\"] }}"), None);
        assert_eq!(own_key_of("{{ secrets.gh_hook }}"), None);
        assert_eq!(secret_reference(&own_key_reference("a.b")), None);
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
