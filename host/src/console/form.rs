//! Run forms generated from an action's parameter schema (the JSON Schema
//! Attune derives from WIT): one field per property with the input type
//! its schema calls for, enums and optional booleans as selects, nested
//! records as fieldsets, and a JSON text area for what a field cannot
//! express (lists, variants, results). Submitted fields are turned back
//! into the params object; each problem is reported at its field.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use attune_runtime::PathError;

/// One field of a run form, or a fieldset of them.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Field {
    /// The form field's name: the value's JSON pointer (`/opts/depth`).
    pub name: String,
    /// The property's name.
    pub label: String,
    /// `text`, `integer`, `number`, `checkbox`, `boolean` (an optional one,
    /// as a select), `select`, `object` or `json`.
    pub kind: &'static str,
    /// What the schema allows, for people (`integer 0 to 255`).
    pub summary: String,
    /// Whether the property must be given.
    pub required: bool,
    /// Choices of a select (the first, empty, one means "not given").
    pub options: Vec<String>,
    /// Bounds of a number.
    pub min: Option<Value>,
    pub max: Option<Value>,
    /// Longest text.
    pub maxlength: Option<u64>,
    /// The submitted value, shown again.
    pub value: String,
    /// What is wrong with it.
    pub error: Option<String>,
    /// A fieldset's fields.
    pub fields: Vec<Field>,
}

/// A schema with `null` allowed stripped to what else it allows.
fn non_null(schema: &Value) -> (&Value, bool) {
    if let Some([a, b]) = schema["anyOf"].as_array().map(Vec::as_slice)
        && a["type"] == "null"
    {
        return (b, true);
    }
    (schema, false)
}

/// The field kind for a (non-null) schema.
fn kind(schema: &Value) -> &'static str {
    let float = schema["anyOf"]
        .as_array()
        .is_some_and(|a| a.first().is_some_and(|x| x["type"] == "number"));
    match schema["type"].as_str() {
        _ if float => "number",
        Some("boolean") => "checkbox",
        Some("integer") => "integer",
        Some("number") => "number",
        Some("string") if schema["enum"].is_array() => "select",
        Some("string") => "text",
        Some("object") if schema["properties"].is_object() => "object",
        _ => "json",
    }
}

/// What a schema allows, in a few words.
pub(super) fn summary(schema: &Value) -> String {
    let (inner, nullable) = non_null(schema);
    let mut text = match kind(inner) {
        "checkbox" => "boolean".to_string(),
        "integer" => match (inner["minimum"].as_i64(), inner["maximum"].as_u64()) {
            (Some(lo), Some(hi)) => format!("integer {lo} to {hi}"),
            _ => "integer".into(),
        },
        "number" => "number".into(),
        "select" => format!(
            "one of {}",
            inner["enum"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "text" => "string".into(),
        "object" => "record".into(),
        _ => match inner["type"].as_str() {
            Some("array") => format!("list of {}", summary(&inner["items"])),
            Some("null") => "nothing".into(),
            _ if inner["oneOf"].is_array() => "one of several cases (JSON)".into(),
            _ => "JSON".into(),
        },
    };
    if nullable {
        text.push_str(", optional");
    }
    text
}

/// The fields for an object schema's properties, filled with `submitted`
/// values and `errors` (paths relative to the params).
pub(super) fn fields(
    schema: &Value,
    submitted: &HashMap<String, String>,
    errors: &[PathError],
) -> Vec<Field> {
    fields_at(schema, "", submitted, errors)
}

fn fields_at(
    schema: &Value,
    prefix: &str,
    submitted: &HashMap<String, String>,
    errors: &[PathError],
) -> Vec<Field> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(key, property)| {
            let name = format!("{prefix}/{}", pointer_escape(key));
            let (inner, _) = non_null(property);
            let required = required.contains(&key.as_str());
            let mut kind = kind(inner);
            let mut options = Vec::new();
            if kind == "select" {
                options.push(String::new());
                options.extend(
                    inner["enum"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_string),
                );
            } else if kind == "checkbox" && !required {
                // Unchecked cannot say "not given": a select can.
                kind = "boolean";
                options = vec![String::new(), "true".into(), "false".into()];
            }
            let (min, max) = match kind {
                "integer" => (inner.get("minimum").cloned(), inner.get("maximum").cloned()),
                _ => (None, None),
            };
            Field {
                label: key.clone(),
                kind,
                summary: summary(property),
                required,
                options,
                min,
                max,
                maxlength: inner["maxLength"].as_u64(),
                value: submitted.get(&name).cloned().unwrap_or_default(),
                error: errors
                    .iter()
                    .filter(|e| e.path == name)
                    .map(|e| e.message.clone())
                    .reduce(|a, b| format!("{a}; {b}")),
                fields: if kind == "object" {
                    fields_at(inner, &name, submitted, errors)
                } else {
                    Vec::new()
                },
                name,
            }
        })
        .collect()
}

/// RFC 6901: `~` and `/` in a key.
fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The params object the submitted fields describe, or every field that
/// could not be read (a word in a number field, text that is not JSON).
/// Empty fields are left out, so an optional value is "not given".
pub(super) fn params(
    schema: &Value,
    submitted: &HashMap<String, String>,
) -> Result<Value, Vec<PathError>> {
    let mut errors = Vec::new();
    let value = object_at(schema, "", submitted, &mut errors);
    if errors.is_empty() {
        Ok(Value::Object(value))
    } else {
        Err(errors)
    }
}

fn object_at(
    schema: &Value,
    prefix: &str,
    submitted: &HashMap<String, String>,
    errors: &mut Vec<PathError>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for field in fields_at(schema, prefix, submitted, &[]) {
        let text = submitted.get(&field.name).map(|s| s.trim()).unwrap_or("");
        let property = &schema["properties"][&field.label];
        let mut bad = |message: &str| errors.push(PathError::new(&field.name, message));
        let value = match field.kind {
            "object" => {
                let (inner, _) = non_null(property);
                let nested = object_at(inner, &field.name, submitted, errors);
                (field.required || !nested.is_empty()).then_some(Value::Object(nested))
            }
            // An unchecked box sends nothing: false.
            "checkbox" => Some(Value::Bool(text == "true")),
            _ if text.is_empty() => None,
            "boolean" => Some(Value::Bool(text == "true")),
            "integer" => match (text.parse::<i64>(), text.parse::<u64>()) {
                (Ok(n), _) => Some(n.into()),
                (_, Ok(n)) => Some(n.into()),
                _ => {
                    bad("must be a whole number");
                    None
                }
            },
            "number" => match text.parse::<f64>() {
                Ok(n) if n.is_finite() => serde_json::Number::from_f64(n).map(Value::Number),
                _ if ["NaN", "Infinity", "-Infinity"].contains(&text) => {
                    Some(Value::String(text.into()))
                }
                _ => {
                    bad("must be a number");
                    None
                }
            },
            "json" => match serde_json::from_str(text) {
                Ok(v) => Some(v),
                Err(e) => {
                    bad(&format!("must be JSON: {e}"));
                    None
                }
            },
            _ => Some(Value::String(text.to_string())),
        };
        if let Some(v) = value {
            out.insert(field.label, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "count": {"type": "integer", "minimum": 0, "maximum": 255},
                "ratio": {"anyOf": [
                    {"type": "number", "minimum": -1e300, "maximum": 1e300},
                    {"enum": ["NaN", "Infinity", "-Infinity"]},
                ]},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
                "loud": {"type": "boolean"},
                "quiet": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "opts": {"type": "object", "properties": {"depth": {"type": "integer"}},
                         "required": ["depth"], "additionalProperties": false},
            },
            "required": ["message", "count", "ratio", "mode", "loud", "tags", "opts"],
        })
    }

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_type_gets_its_input() {
        let f = fields(&schema(), &HashMap::new(), &[]);
        let kinds: Vec<_> = f.iter().map(|f| (f.label.as_str(), f.kind)).collect();
        assert!(kinds.contains(&("message", "text")));
        assert!(kinds.contains(&("count", "integer")));
        assert!(kinds.contains(&("ratio", "number")));
        assert!(kinds.contains(&("mode", "select")));
        assert!(kinds.contains(&("loud", "checkbox")));
        assert!(kinds.contains(&("quiet", "boolean")));
        assert!(kinds.contains(&("tags", "json")));
        let opts = f.iter().find(|f| f.label == "opts").unwrap();
        assert_eq!(opts.kind, "object");
        assert_eq!(opts.fields[0].name, "/opts/depth");
        assert_eq!(
            f.iter().find(|f| f.label == "count").unwrap().summary,
            "integer 0 to 255"
        );
    }

    #[test]
    fn an_enum_of_true_and_false_stays_text_and_an_optional_boolean_is_a_boolean() {
        let schema = json!({"type": "object", "properties": {
            "answer": {"type": "string", "enum": ["true", "false"]},
            "quiet": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
        }, "required": ["answer"]});
        let given = form(&[("/answer", "true"), ("/quiet", "false")]);
        assert_eq!(
            params(&schema, &given).unwrap(),
            json!({"answer": "true", "quiet": false})
        );
    }

    #[test]
    fn fields_become_params_and_bad_ones_are_reported_where_they_are() {
        let good = form(&[
            ("/message", "hi"),
            ("/count", "3"),
            ("/ratio", "0.5"),
            ("/mode", "fast"),
            ("/loud", "true"),
            ("/quiet", ""),
            ("/tags", r#"["a"]"#),
            ("/opts/depth", "2"),
        ]);
        assert_eq!(
            params(&schema(), &good).unwrap(),
            json!({"message": "hi", "count": 3, "ratio": 0.5, "mode": "fast", "loud": true,
                   "tags": ["a"], "opts": {"depth": 2}})
        );
        let bad = form(&[("/count", "three"), ("/ratio", "x"), ("/tags", "[")]);
        let errors = params(&schema(), &bad).unwrap_err();
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/count", "/ratio", "/tags"]);
        let shown = fields(&schema(), &bad, &errors);
        let count = shown.iter().find(|f| f.label == "count").unwrap();
        assert_eq!(count.value, "three");
        assert_eq!(count.error.as_deref(), Some("must be a whole number"));
    }
}
