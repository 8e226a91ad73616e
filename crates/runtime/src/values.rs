//! Conversion between JSON and component values, by the mapping in [`super::schema`].
//!
//! JSON → [`Val`] is driven by the WIT type and reports every problem with its
//! JSON pointer, so it doubles as an exact validator (integers are checked on
//! their exact value, not through `f64`). [`Val`] → JSON needs no type: the
//! value carries its own shape.

use serde_json::{Map, Number, Value};
use wasmtime::component::Val;
use wasmtime::component::types::Type;

use super::schema::is_nullable;

/// One problem with a JSON value, at a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PathError {
    /// JSON pointer to the offending value, e.g. `/items/0/name`; `""` is the root.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl PathError {
    /// The problem `message` at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        PathError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Converts `value` to a component value of type `ty`, collecting every error.
pub fn from_json(ty: &Type, value: &Value) -> Result<Val, Vec<PathError>> {
    let mut cx = Converter::default();
    let val = cx.convert(ty, value);
    match val {
        Some(v) if cx.errors.is_empty() => Ok(v),
        _ => Err(cx.errors),
    }
}

/// Converts named parameters (a JSON object) to component values, in order.
///
/// `params` are the function's `(name, type)` pairs. A missing `option`
/// parameter is none; unknown keys and missing required ones are errors.
pub fn params_from_json<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a Type)>,
    value: &Value,
) -> Result<Vec<Val>, Vec<PathError>> {
    let mut cx = Converter::default();
    let fields: Vec<(&str, &Type)> = params.into_iter().collect();
    let vals = cx.object(&fields, value);
    match vals {
        Some(v) if cx.errors.is_empty() => Ok(v.into_iter().map(|(_, v)| v).collect()),
        _ => Err(cx.errors),
    }
}

/// Converts a component value to JSON.
pub fn to_json(val: &Val) -> Value {
    match val {
        Val::Bool(b) => Value::Bool(*b),
        Val::S8(n) => (*n).into(),
        Val::U8(n) => (*n).into(),
        Val::S16(n) => (*n).into(),
        Val::U16(n) => (*n).into(),
        Val::S32(n) => (*n).into(),
        Val::U32(n) => (*n).into(),
        Val::S64(n) => (*n).into(),
        Val::U64(n) => (*n).into(),
        Val::Float32(f) => float_to_json(f64::from(*f)),
        Val::Float64(f) => float_to_json(*f),
        Val::Char(c) => Value::String(c.to_string()),
        Val::String(s) => Value::String(s.clone()),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            Value::Array(items.iter().map(to_json).collect())
        }
        Val::Record(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, v)| (name.clone(), to_json(v)))
                .collect(),
        ),
        Val::Variant(case, None) => Value::String(case.clone()),
        Val::Variant(case, Some(payload)) => single(case, to_json(payload)),
        Val::Enum(case) => Value::String(case.clone()),
        Val::Flags(names) => Value::Array(names.iter().cloned().map(Value::String).collect()),
        Val::Option(None) => Value::Null,
        Val::Option(Some(inner)) => match &**inner {
            inner @ Val::Option(_) => single("some", to_json(inner)),
            inner => to_json(inner),
        },
        Val::Result(Ok(v)) => single("ok", v.as_deref().map_or(Value::Null, to_json)),
        Val::Result(Err(v)) => single("err", v.as_deref().map_or(Value::Null, to_json)),
        Val::Map(entries) => Value::Array(
            entries
                .iter()
                .map(|(k, v)| Value::Array(vec![to_json(k), to_json(v)]))
                .collect(),
        ),
        // Signatures carrying these are rejected when a component is loaded.
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => Value::Null,
    }
}

fn single(key: &str, value: Value) -> Value {
    let mut map = Map::with_capacity(1);
    map.insert(key.to_string(), value);
    Value::Object(map)
}

fn float_to_json(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::String("NaN".into()),
        None if f > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

/// Name of a JSON value's type, for messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[derive(Default)]
struct Converter {
    path: String,
    errors: Vec<PathError>,
}

impl Converter {
    fn error(&mut self, message: impl Into<String>) -> Option<Val> {
        self.errors.push(PathError {
            path: self.path.clone(),
            message: message.into(),
        });
        None
    }

    fn expected(&mut self, what: &str, got: &Value) -> Option<Val> {
        self.error(format!("expected {what}, got {}", json_kind(got)))
    }

    fn at<T>(&mut self, segment: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        let len = self.path.len();
        self.path.push('/');
        self.path
            .push_str(&segment.replace('~', "~0").replace('/', "~1"));
        let out = f(self);
        self.path.truncate(len);
        out
    }

    fn int<T: TryFrom<i128>>(
        &mut self,
        name: &str,
        value: &Value,
        min: i128,
        max: i128,
        wrap: fn(T) -> Val,
    ) -> Option<Val> {
        let Value::Number(n) = value else {
            return self.expected("integer", value);
        };
        // Numbers keep their source text (serde_json's arbitrary precision),
        // so integers past the 64-bit range are seen exactly, not rounded.
        let text = n.to_string();
        let exact: Option<i128> = if let Ok(i) = text.parse::<i128>() {
            Some(i)
        } else {
            // A float: integral values are integers, as in JSON Schema; they
            // are converted only when exactly representable.
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() != 0.0 || !f.is_finite() {
                return self.error(format!("expected integer, got {n}"));
            }
            let i = f as i128;
            (i as f64 == f).then_some(i)
        };
        match exact.and_then(|i| T::try_from(i).ok()) {
            Some(v) => Some(wrap(v)),
            None => self.error(format!("{n} is out of range for {name} ({min}..={max})")),
        }
    }

    fn float(&mut self, value: &Value, max: f64) -> Option<f64> {
        match value {
            Value::Number(n) => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.abs() > max {
                    self.error(format!("{n} is out of range for this float type"));
                    return None;
                }
                Some(f)
            }
            Value::String(s) if s == "NaN" => Some(f64::NAN),
            Value::String(s) if s == "Infinity" => Some(f64::INFINITY),
            Value::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
            other => {
                self.expected("number (or \"NaN\", \"Infinity\", \"-Infinity\")", other);
                None
            }
        }
    }

    fn convert(&mut self, ty: &Type, value: &Value) -> Option<Val> {
        match ty {
            Type::Bool => match value {
                Value::Bool(b) => Some(Val::Bool(*b)),
                other => self.expected("boolean", other),
            },
            Type::S8 => self.int("s8", value, i8::MIN.into(), i8::MAX.into(), Val::S8),
            Type::U8 => self.int("u8", value, 0, u8::MAX.into(), Val::U8),
            Type::S16 => self.int("s16", value, i16::MIN.into(), i16::MAX.into(), Val::S16),
            Type::U16 => self.int("u16", value, 0, u16::MAX.into(), Val::U16),
            Type::S32 => self.int("s32", value, i32::MIN.into(), i32::MAX.into(), Val::S32),
            Type::U32 => self.int("u32", value, 0, u32::MAX.into(), Val::U32),
            Type::S64 => self.int("s64", value, i64::MIN.into(), i64::MAX.into(), Val::S64),
            Type::U64 => self.int("u64", value, 0, u64::MAX.into(), Val::U64),
            Type::Float32 => self
                .float(value, f32::MAX.into())
                .map(|f| Val::Float32(f as f32)),
            Type::Float64 => self.float(value, f64::MAX).map(Val::Float64),
            Type::Char => match value {
                Value::String(s) => {
                    let mut chars = s.chars();
                    match (chars.next(), chars.next()) {
                        (Some(c), None) => Some(Val::Char(c)),
                        _ => self.error(format!(
                            "expected exactly one character, got {}",
                            s.chars().count()
                        )),
                    }
                }
                other => self.expected("string of one character", other),
            },
            Type::String => match value {
                Value::String(s) => Some(Val::String(s.clone())),
                other => self.expected("string", other),
            },
            Type::List(list) => match value {
                Value::Array(items) => {
                    let item_ty = list.ty();
                    let vals = self.items(items.iter().map(|v| (&item_ty, v)));
                    vals.map(Val::List)
                }
                other => self.expected("array", other),
            },
            Type::Tuple(tuple) => match value {
                Value::Array(items) if items.len() == tuple.types().len() => {
                    let types: Vec<Type> = tuple.types().collect();
                    self.items(types.iter().zip(items)).map(Val::Tuple)
                }
                Value::Array(items) => self.error(format!(
                    "expected array of {} items, got {}",
                    tuple.types().len(),
                    items.len()
                )),
                other => self.expected("array", other),
            },
            Type::Record(record) => {
                let fields: Vec<_> = record.fields().collect();
                let refs: Vec<(&str, &Type)> = fields.iter().map(|f| (f.name, &f.ty)).collect();
                self.object(&refs, value).map(|fields| {
                    Val::Record(
                        fields
                            .into_iter()
                            .map(|(name, v)| (name.to_string(), v))
                            .collect(),
                    )
                })
            }
            Type::Variant(variant) => {
                let (case_name, payload) = match value {
                    Value::String(s) => (s.as_str(), None),
                    Value::Object(map) if map.len() == 1 => {
                        let (k, v) = map.iter().next().expect("one entry");
                        (k.as_str(), Some(v))
                    }
                    other => {
                        return self.expected("case name or single-key object", other);
                    }
                };
                let Some(case) = variant.cases().find(|c| c.name == case_name) else {
                    let names: Vec<&str> = variant.cases().map(|c| c.name).collect();
                    return self.error(format!(
                        "unknown case `{case_name}`; expected one of {}",
                        names.join(", ")
                    ));
                };
                match (&case.ty, payload) {
                    (None, None) => Some(Val::Variant(case_name.to_string(), None)),
                    (None, Some(_)) => self.error(format!(
                        "case `{case_name}` has no payload; write it as the string \"{case_name}\""
                    )),
                    (Some(_), None) => self.error(format!(
                        "case `{case_name}` needs a payload: {{\"{case_name}\": ...}}"
                    )),
                    (Some(t), Some(v)) => {
                        let t = t.clone();
                        let inner = self.at(case_name, |cx| cx.convert(&t, v))?;
                        Some(Val::Variant(case_name.to_string(), Some(Box::new(inner))))
                    }
                }
            }
            Type::Enum(e) => match value {
                Value::String(s) if e.names().any(|n| n == s) => Some(Val::Enum(s.clone())),
                Value::String(s) => {
                    let names: Vec<&str> = e.names().collect();
                    self.error(format!(
                        "unknown case `{s}`; expected one of {}",
                        names.join(", ")
                    ))
                }
                other => self.expected("string", other),
            },
            Type::Flags(flags) => match value {
                Value::Array(items) => {
                    let mut names: Vec<String> = Vec::new();
                    let mut ok = true;
                    for (i, item) in items.iter().enumerate() {
                        let r = self.at(&i.to_string(), |cx| match item {
                            Value::String(s) if !flags.names().any(|n| n == s) => {
                                cx.error(format!("unknown flag `{s}`"))
                            }
                            Value::String(s) if names.contains(s) => {
                                cx.error(format!("flag `{s}` given twice"))
                            }
                            Value::String(s) => Some(Val::String(s.clone())),
                            other => cx.expected("flag name", other),
                        });
                        match r {
                            Some(Val::String(s)) => names.push(s),
                            _ => ok = false,
                        }
                    }
                    ok.then_some(Val::Flags(names))
                }
                other => self.expected("array of flag names", other),
            },
            Type::Option(option) => {
                let inner = option.ty();
                match value {
                    Value::Null => Some(Val::Option(None)),
                    Value::Object(map) if is_nullable(&inner) => match map.get("some") {
                        Some(v) if map.len() == 1 => {
                            let v = self.at("some", |cx| cx.convert(&inner, v))?;
                            Some(Val::Option(Some(Box::new(v))))
                        }
                        _ => self.error("expected null or {\"some\": ...} for a nested option"),
                    },
                    other if is_nullable(&inner) => self.expected("null or {\"some\": ...}", other),
                    other => {
                        let v = self.convert(&inner, other)?;
                        Some(Val::Option(Some(Box::new(v))))
                    }
                }
            }
            Type::Result(result) => {
                let Value::Object(map) = value else {
                    return self.expected("{\"ok\": ...} or {\"err\": ...}", value);
                };
                let (key, payload) = match map.iter().next() {
                    Some((k, v)) if map.len() == 1 && (k == "ok" || k == "err") => (k.as_str(), v),
                    _ => return self.error("expected exactly one of the keys `ok` or `err`"),
                };
                let ty = if key == "ok" {
                    result.ok()
                } else {
                    result.err()
                };
                let inner = match ty {
                    None if payload.is_null() => None,
                    None => {
                        return self.at(key, |cx| cx.expected("null (no payload)", payload));
                    }
                    Some(t) => Some(Box::new(self.at(key, |cx| cx.convert(&t, payload))?)),
                };
                Some(Val::Result(if key == "ok" {
                    Ok(inner)
                } else {
                    Err(inner)
                }))
            }
            Type::Own(_)
            | Type::Borrow(_)
            | Type::Map(_)
            | Type::FixedLengthList(_)
            | Type::Future(_)
            | Type::Stream(_)
            | Type::ErrorContext => self.error("this type cannot cross the action boundary"),
        }
    }

    fn items<'t>(
        &mut self,
        items: impl Iterator<Item = (&'t Type, &'t Value)>,
    ) -> Option<Vec<Val>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, (ty, v)) in items.enumerate() {
            match self.at(&i.to_string(), |cx| cx.convert(ty, v)) {
                Some(v) if ok => out.push(v),
                Some(_) => {}
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// Converts an object whose keys are `fields` (record fields or parameters).
    fn object<'f>(
        &mut self,
        fields: &[(&'f str, &Type)],
        value: &Value,
    ) -> Option<Vec<(&'f str, Val)>> {
        let Value::Object(map) = value else {
            self.expected("object", value);
            return None;
        };
        let mut ok = true;
        for key in map.keys() {
            if !fields.iter().any(|(name, _)| name == key) {
                self.at(key, |cx| cx.error("unknown field"));
                ok = false;
            }
        }
        let mut out = Vec::with_capacity(fields.len());
        for (name, ty) in fields {
            let v = match map.get(*name) {
                Some(v) => self.at(name, |cx| cx.convert(ty, v)),
                None if is_nullable(ty) => Some(Val::Option(None)),
                None => self.at(name, |cx| cx.error("missing required field")),
            };
            match v {
                Some(v) => out.push((*name, v)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}
