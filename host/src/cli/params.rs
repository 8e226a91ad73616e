//! An action's parameters from the command line: a `--params` JSON object
//! and `key=value` pairs, each value read as the action's parameter schema
//! types it.
//!
//! A value is text; the schema says what it means. A string parameter takes
//! the text as it is (`message=5` is `"5"`); a number, integer or boolean
//! parameter parses it, and text that is none is refused here, naming the
//! parameter and the type. Anything else (arrays, objects, variants, a
//! parameter the schema does not know) is read as JSON when it parses as
//! JSON and as a string otherwise, and the schema check that follows
//! reports what does not fit.

use std::fmt;

use serde_json::{Map, Value};

/// Why the command line's parameters cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamsError {
    /// `--params` or a pair is not what its flag takes.
    Malformed(String),
    /// Values their parameter's type cannot read: `(JSON pointer, message)`.
    Unreadable(Vec<(String, String)>),
}

impl ParamsError {
    /// What the problem is, in one line.
    pub fn message(&self) -> &str {
        match self {
            ParamsError::Malformed(m) => m,
            ParamsError::Unreadable(_) => "the parameters do not fit the action's schema",
        }
    }

    /// `(JSON pointer, message)` per value that cannot be read.
    pub fn details(&self) -> &[(String, String)] {
        match self {
            ParamsError::Malformed(_) => &[],
            ParamsError::Unreadable(d) => d,
        }
    }
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())?;
        for (path, message) in self.details() {
            write!(f, "\n  {path}: {message}")?;
        }
        Ok(())
    }
}

/// Merges `--params` JSON with `key=value` pairs (a pair overrides the same
/// key), reading each pair's value by its property in `schema`, the
/// action's parameter schema (see the module documentation).
pub fn build_params(
    json_params: Option<&str>,
    pairs: &[String],
    schema: Option<&Value>,
) -> Result<Value, ParamsError> {
    let mut map = match json_params {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                return Err(ParamsError::Malformed(format!(
                    "--params must be a JSON object, got {}",
                    attune_runtime::values::json_kind(&other)
                )));
            }
            Err(e) => {
                return Err(ParamsError::Malformed(format!(
                    "--params is not valid JSON: {e}"
                )));
            }
        },
    };
    let mut unreadable = Vec::new();
    for pair in pairs {
        let (key, text) = pair
            .split_once('=')
            .ok_or_else(|| ParamsError::Malformed(format!("`{pair}` is not key=value")))?;
        if key.is_empty() {
            return Err(ParamsError::Malformed(format!("`{pair}` has an empty key")));
        }
        let property = schema.and_then(|s| s.get("properties")?.get(key));
        match convert(text, property) {
            Ok(value) => {
                map.insert(key.to_string(), value);
            }
            Err(message) => unreadable.push((pointer(key), message)),
        }
    }
    if unreadable.is_empty() {
        Ok(Value::Object(map))
    } else {
        Err(ParamsError::Unreadable(unreadable))
    }
}

/// The JSON pointer of a top-level key.
fn pointer(key: &str) -> String {
    format!("/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// Reads `text` as a value of `schema` (one parameter's schema; `None` for
/// a parameter the action's schema does not list). The error says what the
/// schema expected.
pub fn convert(text: &str, schema: Option<&Value>) -> Result<Value, String> {
    let mut takes = Accepts::default();
    if !schema.is_some_and(|s| takes.add(s)) {
        return Ok(json_or_string(text));
    }
    if takes.null && text == "null" {
        return Ok(Value::Null);
    }
    let scalar = takes.boolean || takes.integer || takes.number;
    if takes.string || takes.literals.iter().any(|l| l == text) {
        // A string — unless the schema takes other values too and the text
        // is one of them (`{"type": ["string", "integer"]}` and `5`).
        if (takes.json || scalar)
            && let Ok(v) = serde_json::from_str::<Value>(text)
            && !v.is_string()
            && takes.value(&v)
        {
            return Ok(v);
        }
        return Ok(Value::String(text.to_string()));
    }
    if takes.json || !scalar {
        return Ok(json_or_string(text));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) if takes.value(&v) => Ok(v),
        _ => Err(format!("expected {}, got `{text}`", takes.describe())),
    }
}

/// What a value given on the command line meant before schemas were read:
/// JSON when it parses as JSON, else a string.
fn json_or_string(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// The kinds of JSON value a schema admits, as far as reading text goes.
#[derive(Debug, Default)]
struct Accepts {
    null: bool,
    boolean: bool,
    integer: bool,
    number: bool,
    /// Any string.
    string: bool,
    /// Particular strings: enum cases, variant cases without payload,
    /// `"NaN"` and the infinities of a float.
    literals: Vec<String>,
    /// Arrays or objects.
    json: bool,
}

impl Accepts {
    /// Adds what `schema` admits; false when the schema does not say in a
    /// way read here (`$ref`, `allOf`, no `type`, a boolean schema).
    fn add(&mut self, schema: &Value) -> bool {
        let Some(schema) = schema.as_object() else {
            return false;
        };
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            values.iter().for_each(|v| self.literal(v));
            return true;
        }
        if let Some(value) = schema.get("const") {
            self.literal(value);
            return true;
        }
        match schema.get("type") {
            Some(Value::String(t)) => return self.kind(t),
            Some(Value::Array(types)) => {
                let mut known = !types.is_empty();
                for t in types {
                    known &= t.as_str().is_some_and(|t| self.kind(t));
                }
                return known;
            }
            _ => {}
        }
        let branches: Vec<&Value> = ["anyOf", "oneOf"]
            .iter()
            .filter_map(|k| schema.get(*k)?.as_array())
            .flatten()
            .collect();
        let mut known = !branches.is_empty();
        for branch in branches {
            known &= self.add(branch);
        }
        known
    }

    fn kind(&mut self, name: &str) -> bool {
        match name {
            "null" => self.null = true,
            "boolean" => self.boolean = true,
            "integer" => self.integer = true,
            "number" => self.number = true,
            "string" => self.string = true,
            "array" | "object" => self.json = true,
            _ => return false,
        }
        true
    }

    fn literal(&mut self, value: &Value) {
        match value {
            Value::Null => self.null = true,
            Value::Bool(_) => self.boolean = true,
            Value::Number(_) => self.number = true,
            Value::String(s) => self.literals.push(s.clone()),
            Value::Array(_) | Value::Object(_) => self.json = true,
        }
    }

    /// Whether a parsed value is of a kind admitted.
    fn value(&self, v: &Value) -> bool {
        match v {
            Value::Null => self.null,
            Value::Bool(_) => self.boolean,
            Value::Number(n) => self.number || (self.integer && (n.is_i64() || n.is_u64())),
            Value::String(s) => self.string || self.literals.contains(s),
            Value::Array(_) | Value::Object(_) => self.json,
        }
    }

    /// "a number", "an integer or null", "a number or one of "NaN", …".
    fn describe(&self) -> String {
        let mut kinds: Vec<String> = Vec::new();
        if self.boolean {
            kinds.push("a boolean (true or false)".into());
        }
        if self.number {
            kinds.push("a number".into());
        } else if self.integer {
            kinds.push("an integer".into());
        }
        if !self.literals.is_empty() {
            let names: Vec<String> = self.literals.iter().map(|l| format!("{l:?}")).collect();
            kinds.push(format!("one of {}", names.join(", ")));
        }
        if self.null {
            kinds.push("null".into());
        }
        kinds.join(" or ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The parameter schema of an action taking one parameter of `schema`.
    fn one(schema: Value) -> Value {
        json!({"type": "object", "properties": {"p": schema}, "required": ["p"]})
    }

    fn read(schema: Value, text: &str) -> Result<Value, ParamsError> {
        build_params(None, &[format!("p={text}")], Some(&one(schema))).map(|v| v["p"].clone())
    }

    #[test]
    fn a_string_parameter_takes_the_text_as_it_is() {
        let string = json!({"type": "string"});
        for text in ["5", "true", "null", "[1]", "{\"a\": 1}", "", " spaced "] {
            assert_eq!(read(string.clone(), text), Ok(json!(text)), "{text}");
        }
        let char = json!({"type": "string", "minLength": 1, "maxLength": 1});
        assert_eq!(read(char, "7"), Ok(json!("7")));
        let colour = json!({"type": "string", "enum": ["red", "5"]});
        assert_eq!(read(colour.clone(), "5"), Ok(json!("5")));
        assert_eq!(
            read(colour, "blue"),
            Ok(json!("blue")),
            "the schema check says no"
        );
    }

    #[test]
    fn numbers_integers_and_booleans_parse_the_text() {
        let u32 = json!({"type": "integer", "minimum": 0, "maximum": 4_294_967_295_u64});
        assert_eq!(read(u32.clone(), "5"), Ok(json!(5)));
        assert_eq!(
            read(u32.clone(), "-5"),
            Ok(json!(-5)),
            "range is the schema's"
        );
        assert_eq!(
            read(json!({"type": "integer"}), "18446744073709551615"),
            Ok(json!(u64::MAX))
        );
        let f64 = json!({"anyOf": [
            {"type": "number", "minimum": -1e308, "maximum": 1e308},
            {"enum": ["NaN", "Infinity", "-Infinity"]},
        ]});
        assert_eq!(read(f64.clone(), "2.5"), Ok(json!(2.5)));
        assert_eq!(read(f64.clone(), "1e3").unwrap().as_f64(), Some(1000.0));
        assert_eq!(read(f64, "NaN"), Ok(json!("NaN")));
        let bool = json!({"type": "boolean"});
        assert_eq!(read(bool.clone(), "true"), Ok(json!(true)));
        assert_eq!(read(bool, "false"), Ok(json!(false)));
    }

    #[test]
    fn text_that_is_not_of_the_type_is_refused_naming_parameter_and_type() {
        let cases = [
            (
                json!({"type": "integer"}),
                "abc",
                "expected an integer, got `abc`",
            ),
            (
                json!({"type": "integer"}),
                "2.5",
                "expected an integer, got `2.5`",
            ),
            (
                json!({"type": "integer"}),
                "",
                "expected an integer, got ``",
            ),
            (
                json!({"type": "number"}),
                "abc",
                "expected a number, got `abc`",
            ),
            (
                json!({"type": "boolean"}),
                "yes",
                "expected a boolean (true or false), got `yes`",
            ),
            (
                json!({"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity"]}]}),
                "oops",
                "expected a number or one of \"NaN\", \"Infinity\", got `oops`",
            ),
            (
                json!({"anyOf": [{"type": "null"}, {"type": "integer"}]}),
                "x",
                "expected an integer or null, got `x`",
            ),
        ];
        for (schema, text, message) in cases {
            assert_eq!(
                read(schema, text),
                Err(ParamsError::Unreadable(vec![("/p".into(), message.into())]))
            );
        }
    }

    #[test]
    fn every_unreadable_value_is_reported_with_its_pointer() {
        let schema = json!({"type": "object", "properties": {
            "a/b": {"type": "integer"}, "c": {"type": "boolean"}, "d": {"type": "string"},
        }});
        let pairs = ["a/b=x".into(), "c=1".into(), "d=ok".into()];
        let err = build_params(None, &pairs, Some(&schema)).unwrap_err();
        assert_eq!(
            err.details(),
            [
                (
                    "/a~1b".to_string(),
                    "expected an integer, got `x`".to_string()
                ),
                (
                    "/c".to_string(),
                    "expected a boolean (true or false), got `1`".to_string()
                ),
            ]
        );
        assert_eq!(
            err.to_string(),
            "the parameters do not fit the action's schema\n  \
             /a~1b: expected an integer, got `x`\n  \
             /c: expected a boolean (true or false), got `1`"
        );
    }

    #[test]
    fn options_take_null_and_their_inner_type() {
        let text = json!({"anyOf": [{"type": "null"}, {"type": "string"}]});
        assert_eq!(read(text.clone(), "null"), Ok(Value::Null));
        assert_eq!(read(text, "5"), Ok(json!("5")));
        let count = json!({"anyOf": [{"type": "null"}, {"type": "integer"}]});
        assert_eq!(read(count.clone(), "null"), Ok(Value::Null));
        assert_eq!(read(count, "3"), Ok(json!(3)));
    }

    #[test]
    fn arrays_objects_and_variants_are_json_else_strings_for_the_schema_to_judge() {
        let list = json!({"type": "array", "items": {"type": "string"}});
        assert_eq!(read(list.clone(), r#"["a","b"]"#), Ok(json!(["a", "b"])));
        assert_eq!(read(list, "a,b"), Ok(json!("a,b")));
        let record = json!({"type": "object", "properties": {"x": {"type": "integer"}}});
        assert_eq!(read(record, r#"{"x": 1}"#), Ok(json!({"x": 1})));
        let variant = json!({"oneOf": [
            {"const": "none"},
            {"type": "object", "properties": {"some": {"type": "string"}}, "required": ["some"]},
        ]});
        assert_eq!(read(variant.clone(), "none"), Ok(json!("none")));
        assert_eq!(read(variant, r#"{"some": "5"}"#), Ok(json!({"some": "5"})));
        let either = json!({"type": ["string", "integer"]});
        assert_eq!(read(either.clone(), "5"), Ok(json!(5)));
        assert_eq!(read(either, "five"), Ok(json!("five")));
    }

    #[test]
    fn parameters_the_schema_does_not_type_are_json_when_they_parse() {
        let schema = json!({"type": "object", "properties": {
            "any": {}, "linked": {"$ref": "#/$defs/x"},
        }});
        let pairs = [
            "any=5".into(),
            "linked=true".into(),
            "unknown=[1]".into(),
            "other=hello, world".into(),
        ];
        assert_eq!(
            build_params(None, &pairs, Some(&schema)),
            Ok(json!({"any": 5, "linked": true, "unknown": [1], "other": "hello, world"}))
        );
        assert_eq!(
            build_params(None, &["n=5".into(), "e=".into()], None),
            Ok(json!({"n": 5, "e": ""}))
        );
    }

    #[test]
    fn pairs_override_params_json() {
        let schema = one(json!({"type": "string"}));
        let p = build_params(Some(r#"{"p": 1, "q": 2}"#), &["p=1".into()], Some(&schema));
        assert_eq!(p, Ok(json!({"p": "1", "q": 2})));
    }

    #[test]
    fn rejects_params_that_are_not_an_object_and_pairs_without_a_key() {
        let malformed = |json: Option<&str>, pairs: &[String]| match build_params(json, pairs, None)
        {
            Err(ParamsError::Malformed(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(malformed(Some("[1]"), &[]).contains("JSON object"));
        assert!(malformed(Some("{"), &[]).contains("not valid JSON"));
        assert!(malformed(None, &["novalue".into()]).contains("not key=value"));
        assert!(malformed(None, &["=1".into()]).contains("empty key"));
    }
}
