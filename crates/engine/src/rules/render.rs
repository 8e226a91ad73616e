//! Criteria and templating: what a rule does with an event.
//!
//! Criteria are minijinja expressions over `event` (`event.payload.severity
//! == "critical"`). In `action_params`, a string that is exactly one
//! expression (`"{{ event.payload.count }}"`) keeps the expression's JSON type
//! — numbers stay numbers, null stays null — while mixed text renders to a
//! string. Undefined values are errors, never silently empty.

use attune_runtime::PathError;
use serde_json::Value;

use super::{is_template, template_env};
use attune_storage::EventRecord;

/// The template context for an event: `event` and `rule`.
pub fn context(event: &EventRecord, rule: &str) -> minijinja::Value {
    minijinja::context! {
        event => minijinja::context! {
            id => event.id,
            trigger => event.trigger.clone(),
            payload => to_template(&event.payload),
            source => event.source.clone(),
            created_at => event.created_at,
        },
        rule => minijinja::context! { r#ref => rule },
    }
}

/// JSON → template value. Converted by hand: numbers keep their source text
/// (serde_json's arbitrary precision), which generic serializers would see
/// as a private wrapper object.
pub fn to_template(v: &Value) -> minijinja::Value {
    match v {
        Value::Null => minijinja::Value::from(()),
        Value::Bool(b) => minijinja::Value::from(*b),
        Value::Number(n) => {
            let text = n.to_string();
            if let Ok(i) = text.parse::<i64>() {
                minijinja::Value::from(i)
            } else if let Ok(i) = text.parse::<i128>() {
                minijinja::Value::from(i)
            } else {
                minijinja::Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => minijinja::Value::from(s.as_str()),
        Value::Array(items) => {
            minijinja::Value::from(items.iter().map(to_template).collect::<Vec<_>>())
        }
        Value::Object(map) => minijinja::Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), to_template(v)))
                .collect::<std::collections::BTreeMap<String, minijinja::Value>>(),
        ),
    }
}

/// Whether the rule's criteria hold for this context (no criteria: always).
pub fn matches(criteria: Option<&str>, ctx: &minijinja::Value) -> Result<bool, String> {
    let Some(criteria) = criteria.filter(|c| !c.trim().is_empty()) else {
        return Ok(true);
    };
    let env = template_env();
    let expr = env
        .compile_expression(criteria)
        .map_err(|e| format!("criteria: {e}"))?;
    expr.eval(ctx)
        .map(|v| v.is_true())
        .map_err(|e| format!("criteria: {e}"))
}

/// Renders every template in `params`; errors carry the JSON pointer.
pub fn render(params: &Value, ctx: &minijinja::Value) -> Result<Value, PathError> {
    render_at(template_env(), params, ctx, &mut String::new())
}

fn render_at(
    env: &minijinja::Environment<'static>,
    v: &Value,
    ctx: &minijinja::Value,
    path: &mut String,
) -> Result<Value, PathError> {
    match v {
        Value::String(s) if is_template(s) => {
            let fail =
                |path: &String, e: minijinja::Error| PathError::new(path.clone(), e.to_string());
            if let Some(expr) = single_expression(s) {
                let value = env
                    .compile_expression(expr)
                    .and_then(|e| e.eval(ctx))
                    .map_err(|e| fail(path, e))?;
                if value.is_undefined() {
                    return Err(PathError::new(
                        path.clone(),
                        format!("`{expr}` is undefined"),
                    ));
                }
                serde_json::to_value(&value)
                    .map_err(|e| PathError::new(path.clone(), e.to_string()))
            } else {
                env.render_str(s, ctx)
                    .map(Value::String)
                    .map_err(|e| fail(path, e))
            }
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                out.push(render_at(env, item, ctx, path)?);
                path.truncate(len);
            }
            Ok(Value::Array(out))
        }
        Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, item) in map {
                let len = path.len();
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                out.insert(k.clone(), render_at(env, item, ctx, path)?);
                path.truncate(len);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

/// `"{{ expr }}"` → `Some("expr")` when the string is exactly one expression.
pub(crate) fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%"))
        .then_some(inner.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(payload: Value) -> EventRecord {
        EventRecord {
            id: 7,
            trigger: "core.manual".into(),
            payload,
            source: None,
            created_at: 0,
            depth: 0,
            held_reason: None,
            requested_by: None,
        }
    }

    #[test]
    fn a_lone_expression_keeps_its_json_type() {
        let ctx = context(
            &event(json!({"n": 3, "x": null, "tags": ["a"], "host": "db1"})),
            "p.r",
        );
        let out = render(
            &json!({"n": "{{ event.payload.n }}", "x": "{{event.payload.x}}", "tags": "{{ event.payload.tags }}",
                    "text": "{{ event.payload.host }} is down ({{ event.payload.n }})", "lit": 5}),
            &ctx,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"n": 3, "x": null, "tags": ["a"], "text": "db1 is down (3)", "lit": 5})
        );
    }

    #[test]
    fn numbers_render_as_numbers_in_text() {
        let payload: Value =
            serde_json::from_str(r#"{"n": 3, "big": 18446744073709551615, "f": 1.5}"#).unwrap();
        let ctx = context(&event(payload), "p.r");
        let out = render(&json!({"t": "{{ event.payload.n }}/{{ event.payload.f }}", "big": "{{ event.payload.big }}"}), &ctx).unwrap();
        assert_eq!(out["t"], "3/1.5");
        assert_eq!(out["big"].to_string(), "18446744073709551615");
    }

    #[test]
    fn undefined_values_are_errors_with_their_path() {
        let ctx = context(&event(json!({})), "p.r");
        let PathError { path, message } =
            render(&json!({"a": {"b": "{{ event.payload.missing }}"}}), &ctx).unwrap_err();
        assert_eq!(path, "/a/b");
        assert!(message.contains("undefined"), "{message}");
    }

    #[test]
    fn a_runaway_template_runs_out_of_fuel_promptly() {
        let ctx = context(&event(json!({})), "p.r");
        let started = std::time::Instant::now();
        let spin = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}";
        let PathError { path, message } = render(&json!({"x": spin}), &ctx).unwrap_err();
        assert_eq!(path, "/x");
        assert!(message.contains("fuel"), "{message}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "stopped promptly: {:?}",
            started.elapsed()
        );
        // Ordinary templates fit easily.
        let ok = render(
            &json!({"m": "{% for i in range(50) %}{{ i }}{% endfor %}"}),
            &ctx,
        )
        .unwrap();
        assert!(ok["m"].as_str().unwrap().ends_with("49"));
    }

    #[test]
    fn fromjson_reads_json_text_as_a_value() {
        let ctx = context(
            &event(json!({"body": "{\"id\": 7, \"tags\": [\"a\"]}"})),
            "p.r",
        );
        let out = render(
            &json!({"id": "{{ (event.payload.body | fromjson).id }}",
                    "tag": "{{ (event.payload.body | fromjson).tags[0] }}"}),
            &ctx,
        )
        .unwrap();
        assert_eq!(out, json!({"id": 7, "tag": "a"}));
        assert!(render(&json!({"x": "{{ event.payload.id | fromjson }}"}), &ctx).is_err());
        let bad = context(&event(json!({"body": "not json"})), "p.r");
        let PathError { message, .. } =
            render(&json!({"x": "{{ event.payload.body | fromjson }}"}), &bad).unwrap_err();
        assert!(message.contains("not JSON"), "{message}");
    }

    #[test]
    fn criteria_match_and_do_not_match() {
        let ctx = context(&event(json!({"severity": "critical", "count": 2})), "p.r");
        assert_eq!(
            matches(Some("event.payload.severity == \"critical\""), &ctx),
            Ok(true)
        );
        assert_eq!(matches(Some("event.payload.count > 5"), &ctx), Ok(false));
        assert_eq!(matches(None, &ctx), Ok(true));
        assert!(matches(Some("event.payload.nope.deeper"), &ctx).is_err());
    }
}
