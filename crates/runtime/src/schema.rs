//! JSON Schema for WIT types, following the one JSON ↔ WIT mapping.
//!
//! The mapping (also in `docs/actions.md`):
//!
//! | WIT | JSON |
//! |---|---|
//! | `bool` | boolean |
//! | integers | number, range-checked exactly (`u64`/`s64` included) |
//! | `f32`, `f64` | number, or `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | `char` | string of exactly one Unicode scalar value |
//! | `string` | string |
//! | `list<T>` | array |
//! | `tuple<..>` | array of fixed length |
//! | `record` | object keyed by the WIT field names; `option` fields may be absent |
//! | `enum` | the case name |
//! | `flags` | array of flag names, each at most once |
//! | `variant` | `"case"` without payload, `{"case": payload}` with one |
//! | `option<T>` | `null` (or absent) for none, the value for some; when `T` is itself an option, some is `{"some": T}` |
//! | `result<T, E>` | `{"ok": T}` / `{"err": E}` (`null` for a missing payload) |
//! | resources, maps, fixed-length lists, futures, streams, error contexts | not allowed in action signatures |
//!
//! [`super::values`] converts with the same rules; tests hold the two together.

use serde_json::{Value, json};
use wasmtime::component::types::Type;

/// JSON Schema dialect of every schema this module writes.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// A WIT type that the JSON mapping cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} cannot cross the action boundary (at `{path}`)")]
pub struct Unsupported {
    /// Which kind of type it was, e.g. `a resource`.
    pub what: &'static str,
    /// Where inside the parameter or result type it sits, as a JSON pointer.
    pub path: String,
}

/// Returns the JSON Schema for values of `ty`.
pub fn for_type(ty: &Type) -> Result<Value, Unsupported> {
    schema(ty, &mut String::new())
}

/// Whether a WIT type's JSON form can be `null` (only options can).
pub(crate) fn is_nullable(ty: &Type) -> bool {
    matches!(ty, Type::Option(_))
}

fn integer(min: i128, max: i128) -> Value {
    json!({"type": "integer", "minimum": number(min), "maximum": number(max)})
}

fn number(n: i128) -> Value {
    if let Ok(v) = i64::try_from(n) {
        Value::from(v)
    } else {
        Value::from(u64::try_from(n).expect("integer bounds fit u64 or i64"))
    }
}

fn float(max: f64) -> Value {
    json!({"anyOf": [
        {"type": "number", "minimum": -max, "maximum": max},
        {"enum": ["NaN", "Infinity", "-Infinity"]},
    ]})
}

fn schema(ty: &Type, path: &mut String) -> Result<Value, Unsupported> {
    let unsupported = |what, path: &String| {
        Err(Unsupported {
            what,
            path: if path.is_empty() {
                "/".into()
            } else {
                path.clone()
            },
        })
    };
    Ok(match ty {
        Type::Bool => json!({"type": "boolean"}),
        Type::S8 => integer(i8::MIN.into(), i8::MAX.into()),
        Type::U8 => integer(0, u8::MAX.into()),
        Type::S16 => integer(i16::MIN.into(), i16::MAX.into()),
        Type::U16 => integer(0, u16::MAX.into()),
        Type::S32 => integer(i32::MIN.into(), i32::MAX.into()),
        Type::U32 => integer(0, u32::MAX.into()),
        Type::S64 => integer(i64::MIN.into(), i64::MAX.into()),
        Type::U64 => integer(0, u64::MAX.into()),
        Type::Float32 => float(f32::MAX.into()),
        Type::Float64 => float(f64::MAX),
        Type::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
        Type::String => json!({"type": "string"}),
        Type::List(list) => {
            let items = nested(path, "items", |p| schema(&list.ty(), p))?;
            json!({"type": "array", "items": items})
        }
        Type::Tuple(tuple) => {
            let mut items = Vec::new();
            for (i, t) in tuple.types().enumerate() {
                items.push(nested(path, &i.to_string(), |p| schema(&t, p))?);
            }
            let n = items.len();
            json!({"type": "array", "prefixItems": items, "items": false, "minItems": n, "maxItems": n})
        }
        Type::Record(record) => {
            let mut properties = serde_json::Map::new();
            let mut required = Vec::new();
            for field in record.fields() {
                let s = nested(path, field.name, |p| schema(&field.ty, p))?;
                if !is_nullable(&field.ty) {
                    required.push(field.name.to_string());
                }
                properties.insert(field.name.to_string(), s);
            }
            json!({
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            })
        }
        Type::Variant(variant) => {
            let mut cases = Vec::new();
            for case in variant.cases() {
                cases.push(match &case.ty {
                    None => json!({"const": case.name}),
                    Some(t) => {
                        let s = nested(path, case.name, |p| schema(t, p))?;
                        single_key_object(case.name, s)
                    }
                });
            }
            json!({"oneOf": cases})
        }
        Type::Enum(e) => json!({"type": "string", "enum": e.names().collect::<Vec<_>>()}),
        Type::Flags(f) => json!({
            "type": "array",
            "items": {"enum": f.names().collect::<Vec<_>>()},
            "uniqueItems": true,
        }),
        Type::Option(option) => {
            let inner_ty = option.ty();
            if is_nullable(&inner_ty) {
                let inner = nested(path, "some", |p| schema(&inner_ty, p))?;
                json!({"oneOf": [{"type": "null"}, single_key_object("some", inner)]})
            } else {
                let inner = schema(&inner_ty, path)?;
                json!({"anyOf": [{"type": "null"}, inner]})
            }
        }
        Type::Result(result) => {
            let ok = match result.ok() {
                Some(t) => nested(path, "ok", |p| schema(&t, p))?,
                None => json!({"type": "null"}),
            };
            let err = match result.err() {
                Some(t) => nested(path, "err", |p| schema(&t, p))?,
                None => json!({"type": "null"}),
            };
            json!({"oneOf": [single_key_object("ok", ok), single_key_object("err", err)]})
        }
        Type::Own(_) | Type::Borrow(_) => return unsupported("a resource", path),
        Type::Map(_) => return unsupported("a map", path),
        Type::FixedLengthList(_) => return unsupported("a fixed-length list", path),
        Type::Future(_) => return unsupported("a future", path),
        Type::Stream(_) => return unsupported("a stream", path),
        Type::ErrorContext => return unsupported("an error-context", path),
    })
}

fn single_key_object(key: &str, value: Value) -> Value {
    json!({
        "type": "object",
        "properties": {key: value},
        "required": [key],
        "additionalProperties": false,
    })
}

/// Runs `f` with `segment` appended to the JSON pointer `path`.
fn nested<T>(path: &mut String, segment: &str, f: impl FnOnce(&mut String) -> T) -> T {
    let len = path.len();
    path.push('/');
    path.push_str(&segment.replace('~', "~0").replace('/', "~1"));
    let out = f(path);
    path.truncate(len);
    out
}
