//! The schema and the converter agree: every parameter object the JSON Schema
//! accepts converts to component values, and every one it rejects fails to
//! convert with at least one error carrying a JSON pointer. Checked with
//! generated JSON biased towards the shapes and edge values of the mapping.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use support::pack;

/// The actions of the `types` guest whose single parameter is `v`.
const SINGLE: &[&str] = &[
    "bools",
    "s8s",
    "u8s",
    "s16s",
    "u16s",
    "s32s",
    "u32s",
    "s64s",
    "u64s",
    "f32s",
    "f64s",
    "chars",
    "strings",
    "points",
    "tuples",
    "colors",
    "perms-of",
    "shapes",
    "options",
    "nested-options",
    "results",
    "unit-results",
    "kebab",
    "nested-lists",
];

/// A number parsed from its exact text (kept exactly past 64 bits).
fn exact(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(vec![
            json!(0),
            json!(1),
            json!(-1),
            json!(127),
            json!(128),
            json!(-129),
            json!(255),
            json!(256),
            json!(65535),
            json!(65536),
            json!(i32::MAX),
            json!(u32::MAX),
            json!(u32::MAX as u64 + 1),
            json!(i64::MIN),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(1.5),
            json!(-0.0),
            json!(7.0),
            json!(1e19),
            json!(18446744073709551616.0),
            json!(3.5e38),
            json!(1e300),
            exact("18446744073709551616"),
            exact("-9223372036854775809"),
            exact("340282366920938463463374607431768211456"),
        ]),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "",
            "a",
            "ab",
            "🦀",
            "red",
            "green",
            "read",
            "write",
            "exec",
            "fly",
            "none",
            "circle",
            "NaN",
            "Infinity",
            "-Infinity",
            "some",
            "ok",
            "err",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "v",
        "x",
        "y",
        "label",
        "some",
        "ok",
        "err",
        "circle",
        "rect",
        "poly",
        "none",
        "first-name",
        "is-admin",
        "count",
        "name",
        "tags",
        "extra",
    ])
    .prop_map(str::to_string)
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Whether `v` holds a number that `f64` cannot represent exactly.
fn has_wide_number(v: &Value) -> bool {
    match v {
        Value::Number(n) => n
            .to_string()
            .parse::<i128>()
            .is_ok_and(|i| i.unsigned_abs() > 1 << 53),
        Value::Array(items) => items.iter().any(has_wide_number),
        Value::Object(map) => map.values().any(has_wide_number),
        _ => false,
    }
}

fn check(action: &str, params: &Value) -> Result<(), TestCaseError> {
    let types = pack("types");
    let action = types.action(action).expect("action exists");
    let name = &action.info().name;
    let converted = action.convert_params(params);
    // What the runtime and the API use agrees with the converter, always.
    prop_assert_eq!(
        action.validate(params).is_ok(),
        converted.is_ok(),
        "{} on {}",
        name,
        params
    );
    match (action.schema_accepts(params), &converted) {
        (true, Ok(_)) => {}
        (false, Err(errors)) => {
            prop_assert!(!errors.is_empty());
            for e in errors {
                prop_assert!(e.path.is_empty() || e.path.starts_with('/'), "{e:?}");
            }
        }
        (false, Ok(_)) => {
            return Err(TestCaseError::fail(format!(
                "{name}: the schema rejects {params} but it converts"
            )));
        }
        // JSON Schema validators compare numbers through f64; only numbers
        // past 2^53 may slip through the document alone.
        (true, Err(errors)) => prop_assert!(
            has_wide_number(params),
            "{name}: the schema accepts {params} but conversion fails: {errors:?}"
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn schema_and_converter_agree_on_single_parameters(v in json_value()) {
        for name in SINGLE {
            check(&format!("roundtrip.{name}"), &json!({ "v": v }))?;
        }
    }

    #[test]
    fn schema_and_converter_agree_on_whole_parameter_objects(params in json_value()) {
        check("roundtrip.many", &params)?;
        check("roundtrip.points", &params)?;
    }
}
