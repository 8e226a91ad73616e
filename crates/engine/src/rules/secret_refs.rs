//! Secrets in templates are references, never values.
//!
//! A template may place a secret only as a whole `{{ secrets.NAME }}` at the
//! top level of a string (alone, or inside text such as `"Bearer {{
//! secrets.token }}"`). Anything else that names `secrets` — a filter, a
//! test, an operator, an index, a loop, a `set`, a macro, criteria,
//! conditions, `publish`, a workflow's output — is refused when the rule,
//! workflow or sensor is saved. The check walks the template's syntax tree
//! (minijinja's parser), never its text.
//!
//! Rendering never sees a value either: `secrets.NAME` renders as a
//! [`Placeholders`] token, unique to that one render, and the value is put
//! in place of the token afterwards, whole, by the code that seals params
//! for the worker. So even a template saved before these rules existed can
//! compute only on a token, the record shows [`MASK`] where the token was,
//! and the exact-value redaction of the run's output always applies. A
//! token that arrives in an event's payload is not this render's token and
//! is left alone.

use std::collections::{BTreeMap, BTreeSet};

use rand::RngCore;
use serde_json::Value;

use super::template_strings;
use attune_runtime::PathError;
use attune_runtime::secrets::MASK;

/// The variable templates read secrets through.
const SECRETS: &str = "secrets";

/// What a template may do with a secret, said wherever one is refused.
pub const ALLOWED: &str = "a secret may only be placed whole, as `{{ secrets.NAME }}`, \
     inside a string parameter; no filter, test, operator, index, loop or `set` may use it";

/// The secret names a template text refers to, or why it may not use them.
pub fn names_in_template(text: &str) -> Result<BTreeSet<String>, String> {
    let tree = minijinja::machinery::parse(text, "<template>", Default::default())
        .map_err(|e| format!("not a valid template: {e}"))?;
    let tree = serde_json::to_value(&tree).map_err(|e| e.to_string())?;
    let mut names = BTreeSet::new();
    for child in children(&tree) {
        if let Some(name) = whole_reference(child) {
            names.insert(name.to_string());
        } else if mentions_secrets(child) {
            return Err(ALLOWED.into());
        }
    }
    Ok(names)
}

/// Checks an expression (criteria, a condition) that may not read secrets.
pub fn check_expression(expr: &str) -> Result<(), String> {
    let tree = minijinja::machinery::parse_expr(expr)
        .map_err(|e| format!("not a valid expression: {e}"))?;
    let tree = serde_json::to_value(&tree).map_err(|e| e.to_string())?;
    if mentions_secrets(&tree) {
        return Err(format!("secrets cannot be read here; {ALLOWED}"));
    }
    Ok(())
}

/// Checks a template that may not read secrets at all (`publish`, output).
pub fn check_no_secrets(text: &str) -> Result<(), String> {
    match names_in_template(text) {
        Ok(names) if names.is_empty() => Ok(()),
        Ok(_) => Err(format!("secrets cannot be used here; {ALLOWED}")),
        Err(e) => Err(e),
    }
}

/// Every secret reference in the templates of `params`: the names with the
/// JSON pointers of the strings they sit in, and every template that uses
/// a secret in a way it may not (at its pointer).
pub fn refs_in_params(params: &Value) -> (BTreeMap<String, Vec<String>>, Vec<PathError>) {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut errors = Vec::new();
    // Every event's rules come through here: most name no secret, and
    // leave without a copy of their templates.
    if !any_string_mentions(params, SECRETS) {
        return (found, errors);
    }
    for (path, text) in template_strings(params) {
        // Most templates never mention secrets: skip parsing them here.
        if !text.contains(SECRETS) {
            continue;
        }
        match names_in_template(&text) {
            Ok(names) => {
                for name in names {
                    found.entry(name).or_default().push(path.clone());
                }
            }
            // Parse errors are reported by the template check itself.
            Err(e) if e.starts_with("not a valid template") => {}
            Err(e) => errors.push(PathError::new(path, e)),
        }
    }
    (found, errors)
}

/// Whether any string in `v` contains `word`, without copying any.
fn any_string_mentions(v: &Value, word: &str) -> bool {
    match v {
        Value::String(s) => s.contains(word),
        Value::Array(items) => items.iter().any(|i| any_string_mentions(i, word)),
        Value::Object(map) => map.values().any(|i| any_string_mentions(i, word)),
        _ => false,
    }
}

/// Whether the parameter schema at `pointer` (within an object schema)
/// takes any string unchecked: a secret placed there cannot change whether
/// the params validate (no enum, pattern, length or format to compare it
/// with). A part of the schema that says nothing takes anything.
pub fn takes_any_string(schema: &Value, pointer: &str) -> bool {
    let mut at = schema;
    for token in pointer.split('/').skip(1) {
        let key = token.replace("~1", "/").replace("~0", "~");
        let next = at.get("properties").and_then(|p| p.get(&key)).or_else(|| {
            let index: usize = key.parse().ok()?;
            at.get("prefixItems")
                .and_then(|p| p.get(index))
                .or_else(|| at.get("items"))
        });
        match next {
            Some(next) => at = next,
            None => return unconstrained(at),
        }
    }
    plain_string(at)
}

/// An object or array part that does not describe its members.
fn unconstrained(schema: &Value) -> bool {
    schema
        .get("additionalProperties")
        .is_none_or(|a| a.as_bool() != Some(false))
        && schema.get("properties").is_none()
}

fn plain_string(schema: &Value) -> bool {
    const CONTENT: [&str; 7] = [
        "enum",
        "const",
        "pattern",
        "minLength",
        "maxLength",
        "format",
        "contentEncoding",
    ];
    if let Some(options) = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Value::as_array)
    {
        // `option<string>`: null or a plain string.
        return options
            .iter()
            .all(|o| o.get("type").and_then(Value::as_str) == Some("null") || plain_string(o))
            && options.iter().any(plain_string);
    }
    let is_string = match schema.get("type") {
        None => true,
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "string"),
        Some(_) => false,
    };
    is_string && CONTENT.iter().all(|k| schema.get(*k).is_none())
}

/// The top-level statements of a parsed template.
fn children(tree: &Value) -> Vec<&Value> {
    node(tree)
        .and_then(|t| t.get("children"))
        .and_then(Value::as_array)
        .map(|c| c.iter().collect())
        .unwrap_or_default()
}

/// The fields of a syntax node (nodes carry their span beside them).
fn node(v: &Value) -> Option<&Value> {
    v.get("inner")?.get(0)
}

fn is_secrets_var(v: &Value) -> bool {
    v.get("expr").and_then(Value::as_str) == Some("Var")
        && node(v).and_then(|n| n.get("id")).and_then(Value::as_str) == Some(SECRETS)
}

/// `NAME` when `stmt` is exactly `{{ secrets.NAME }}`.
fn whole_reference(stmt: &Value) -> Option<&str> {
    if stmt.get("stmt").and_then(Value::as_str) != Some("EmitExpr") {
        return None;
    }
    let expr = node(stmt)?.get("expr")?;
    if expr.get("expr").and_then(Value::as_str) != Some("GetAttr") {
        return None;
    }
    let attr = node(expr)?;
    is_secrets_var(attr.get("expr")?)
        .then(|| attr.get("name").and_then(Value::as_str))
        .flatten()
}

/// Whether the variable `secrets` appears anywhere in `v`: read, assigned,
/// looped over, passed, shadowed.
fn mentions_secrets(v: &Value) -> bool {
    is_secrets_var(v)
        || match v {
            Value::Array(items) => items.iter().any(mentions_secrets),
            Value::Object(map) => map.values().any(mentions_secrets),
            _ => false,
        }
}

/// The tokens one render puts where its secrets go.
pub struct Placeholders {
    nonce: String,
    names: BTreeSet<String>,
}

impl Placeholders {
    /// Fresh tokens for `names`.
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        let names: BTreeSet<String> = names.into_iter().collect();
        // Most renders hand on no secret: they draw no nonce either.
        let nonce = if names.is_empty() {
            String::new()
        } else {
            let mut nonce = [0u8; 16];
            rand::rng().fill_bytes(&mut nonce);
            hex::encode(nonce)
        };
        Self { nonce, names }
    }

    /// Whether no secret is referred to.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The names referred to.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    fn token(&self, name: &str) -> String {
        format!("\u{1}secret:{}:{name}\u{1}", self.nonce)
    }

    /// `ctx` with `secrets.NAME` bound to this render's token for each name.
    pub fn bind(&self, ctx: &minijinja::Value) -> minijinja::Value {
        let map: BTreeMap<String, minijinja::Value> = self
            .names
            .iter()
            .map(|n| (n.clone(), minijinja::Value::from(self.token(n))))
            .collect();
        minijinja::context! { secrets => map, ..ctx.clone() }
    }

    /// `text` (an error message) with every token replaced by [`MASK`].
    pub fn mask_text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for name in &self.names {
            out = out.replace(&self.token(name), MASK);
        }
        out
    }

    /// `rendered` with every token replaced by [`MASK`]: what records show.
    pub fn masked(&self, rendered: &Value) -> Value {
        self.substitute(rendered, |_| Some(MASK))
    }

    /// `rendered` with every token replaced by its secret's value (`None`
    /// when a value is missing).
    pub fn real<'a>(
        &self,
        rendered: &Value,
        value: impl Fn(&str) -> Option<&'a str>,
    ) -> Option<Value> {
        let mut missing = false;
        let out = self.substitute(rendered, |name| {
            let v = value(name);
            missing |= v.is_none();
            v
        });
        (!missing).then_some(out)
    }

    fn substitute<'a>(&self, v: &Value, mut value: impl FnMut(&str) -> Option<&'a str>) -> Value {
        let tokens: Vec<(String, &str)> = self.names().map(|n| (self.token(n), n)).collect();
        fn walk<'a>(
            v: &Value,
            tokens: &[(String, &str)],
            value: &mut impl FnMut(&str) -> Option<&'a str>,
        ) -> Value {
            match v {
                Value::String(s) if s.contains('\u{1}') => {
                    let mut s = s.clone();
                    for (token, name) in tokens {
                        if s.contains(token.as_str()) {
                            s = s.replace(token.as_str(), value(name).unwrap_or(MASK));
                        }
                    }
                    Value::String(s)
                }
                Value::Array(items) => {
                    Value::Array(items.iter().map(|i| walk(i, tokens, value)).collect())
                }
                Value::Object(map) => Value::Object(
                    map.iter()
                        .map(|(k, i)| (k.clone(), walk(i, tokens, value)))
                        .collect(),
                ),
                other => other.clone(),
            }
        }
        walk(v, &tokens, &mut value)
    }
}

/// The secrets `params` (an action's parameters, before rendering) hand
/// to `action`, each with the pointers it sits at, and every way they break
/// the rules above: a use other than a whole reference, a secret the
/// action's pack is not granted, a secret in a parameter that checks its
/// content. Pointers are within `params`.
pub async fn check_handed(
    core: &crate::Core,
    action: &attune_storage::ActionRecord,
    params: &Value,
) -> Result<(BTreeMap<String, Vec<String>>, Vec<PathError>), crate::EngineError> {
    let (found, mut errors) = refs_in_params(params);
    if found.is_empty() {
        return Ok((found, errors));
    }
    let grants = core.cache.grants(&core.storage, &action.pack).await?;
    for (name, paths) in &found {
        if !grants.grants.secrets.iter().any(|g| g == name) {
            errors.push(PathError::new(
                paths[0].clone(),
                format!(
                    "secret `{name}` is not granted to pack `{pack}`; an admin grants it with \
                     `attune pack grant {pack} --secret {name}`",
                    pack = action.pack
                ),
            ));
        }
        for path in paths {
            if !takes_any_string(&action.params_schema, path) {
                errors.push(PathError::new(
                    path.clone(),
                    format!(
                        "this parameter of `{}` checks what a string holds, so whether it fits \
                         would depend on the secret's value; {ALLOWED}",
                        action.r#ref
                    ),
                ));
            }
        }
    }
    Ok((found, errors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_references_are_allowed_alone_or_inside_text() {
        for (text, names) in [
            ("{{ secrets.token }}", vec!["token"]),
            ("Bearer {{ secrets.token }}", vec!["token"]),
            ("{{secrets.a}}:{{ secrets.b }}", vec!["a", "b"]),
            ("{{- secrets.a -}} {{ event.payload.x | upper }}", vec!["a"]),
            ("{{ event.payload.secrets }}", vec![]),
            ("{{ 'secrets' }}", vec![]),
        ] {
            let found = names_in_template(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(found.iter().collect::<Vec<_>>(), names, "{text}");
        }
    }

    #[test]
    fn every_other_use_of_a_secret_is_refused() {
        for text in [
            "{{ secrets.token | reverse }}",
            "{{ secrets.token | upper }}",
            "{{ secrets.token | list | join(' ') }}",
            "{{ secrets.token | urlencode }}",
            "{{ secrets.token[0] }}",
            "{{ secrets.token[1:3] }}",
            "{{ secrets['token'] }}",
            "{{ secrets }}",
            "{{ secrets.token ~ 'x' }}",
            "{{ secrets.token + 'x' }}",
            "{{ secrets.token.upper() }}",
            "{{ secrets.token.length }}",
            "{{ secrets.token is string }}",
            "{{ secrets.token == event.payload.g }}",
            "{{ 'a' if secrets.token == 'x' else 'b' }}",
            "{% if secrets.token == event.payload.g %}yes{% endif %}",
            "{% if true %}{{ secrets.token }}{% endif %}",
            "{% for c in secrets.token %}{{ c }}{% endfor %}",
            "{% set s = secrets.token %}{{ s }}",
            "{% set s = secrets %}{{ s.token }}",
            "{% set secrets = event.payload %}{{ secrets.x }}",
            "{% with s = secrets.token %}{{ s }}{% endwith %}",
            "{% macro m(x) %}{{ secrets.token }}{% endmacro %}{{ m(1) }}",
            "{% filter upper %}{{ secrets.token }}{% endfilter %}",
            "{{ [secrets.token] }}",
            "{{ {'a': secrets.token} }}",
            "{{ event.payload[secrets.token] }}",
            "{{ secrets.token | default('x') }}",
        ] {
            assert_eq!(names_in_template(text), Err(ALLOWED.into()), "{text}");
        }
    }

    #[test]
    fn expressions_may_not_read_secrets() {
        assert!(check_expression("event.payload.count > 0").is_ok());
        assert!(check_expression("secrets.token == 'x'").is_err());
        assert!(check_expression("event.payload.x in secrets").is_err());
        assert!(check_no_secrets("{{ result.id }}").is_ok());
        assert!(check_no_secrets("{{ secrets.x }}").is_err());
    }

    #[test]
    fn references_are_found_with_their_paths() {
        let (found, errors) = refs_in_params(&json!({
            "auth": "Bearer {{ secrets.token }}",
            "list": ["{{ secrets.other }}", "{{ secrets.token | reverse }}"],
            "plain": "{{ event.id }}",
        }));
        assert_eq!(found["token"], ["/auth"]);
        assert_eq!(found["other"], ["/list/0"]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "/list/1");
    }

    #[test]
    fn only_plain_string_slots_take_a_secret() {
        let schema = json!({"type": "object", "properties": {
            "s": {"type": "string"},
            "c": {"type": "string", "minLength": 1, "maxLength": 1},
            "e": {"type": "string", "enum": ["a", "b"]},
            "n": {"type": "integer"},
            "o": {"anyOf": [{"type": "null"}, {"type": "string"}]},
            "l": {"type": "array", "items": {"type": "string"}},
            "r": {"type": "object", "properties": {"k": {"type": "string", "pattern": "^a"}}},
            "free": {"type": "object"},
        }, "additionalProperties": false});
        assert!(takes_any_string(&schema, "/s"));
        assert!(takes_any_string(&schema, "/o"));
        assert!(takes_any_string(&schema, "/l/3"));
        assert!(takes_any_string(&schema, "/free/anything"));
        assert!(!takes_any_string(&schema, "/c"));
        assert!(!takes_any_string(&schema, "/e"));
        assert!(!takes_any_string(&schema, "/n"));
        assert!(!takes_any_string(&schema, "/r/k"));
        assert!(!takes_any_string(&schema, "/missing"));
        assert!(takes_any_string(&json!({}), "/x"));
    }

    #[test]
    fn placeholders_become_masks_or_values_and_foreign_tokens_stay() {
        let ph = Placeholders::new(["token".to_string()]);
        let ctx = ph.bind(&minijinja::context! { event => minijinja::context! {} });
        let env = minijinja::Environment::new();
        let out = env.render_str("Bearer {{ secrets.token }}", &ctx).unwrap();
        let rendered = json!({"auth": out, "n": 1});
        assert_eq!(
            ph.masked(&rendered),
            json!({"auth": "Bearer ********", "n": 1})
        );
        assert_eq!(
            ph.real(&rendered, |n| (n == "token").then_some("s3cret")),
            Some(json!({"auth": "Bearer s3cret", "n": 1}))
        );
        assert_eq!(ph.real(&rendered, |_| None), None, "a missing value");
        // Another render's token (say, one copied into an event) is inert.
        let other = Placeholders::new(["token".to_string()]);
        let foreign = json!(other.token("token"));
        assert_eq!(ph.real(&foreign, |_| Some("s3cret")), Some(foreign.clone()));
        // A reversed token reveals nothing either.
        let reversed = env
            .render_str("{{ secrets.token | reverse }}", &ctx)
            .unwrap();
        let out = ph
            .real(&json!(reversed), |_| Some("v4lue"))
            .unwrap()
            .to_string();
        assert!(!out.contains("v4lue") && !out.contains("eul4v"), "{out}");
    }
}
