//! The JSON ↔ WIT mapping, both ways, through a real guest (`actions/types`,
//! built with plain wit-bindgen): every value goes in as JSON, through the
//! component as WIT values, and must come back as the same JSON.

use attune_runtime::{ExecuteError, Status};
use serde_json::{Value, json};
use support::run;

/// Calls the identity function `func` of the roundtrip interface with `v`.
async fn roundtrip(func: &str, v: Value) -> Result<Value, ExecuteError> {
    let out = run("types", &format!("roundtrip.{func}"), json!({ "v": v })).await?;
    assert_eq!(
        out.status,
        Status::Succeeded,
        "{func}({v}): {:?}",
        out.error
    );
    Ok(out.result.expect("succeeded with a result"))
}

/// Asserts `v` survives the trip unchanged.
async fn same(func: &str, v: Value) {
    let got = roundtrip(func, v.clone())
        .await
        .unwrap_or_else(|e| panic!("{func}({v}): {e}"));
    assert_eq!(got, v, "{func}");
}

/// Asserts `v` is rejected before the guest runs, with an error at `/v…`.
async fn rejected(func: &str, v: Value) -> Vec<attune_runtime::PathError> {
    match roundtrip(func, v.clone()).await {
        Err(ExecuteError::InvalidParams(errors)) => {
            assert!(!errors.is_empty());
            assert!(
                errors.iter().all(|e| e.path.starts_with("/v")),
                "{func}({v}): {errors:?}"
            );
            errors
        }
        other => panic!("{func}({v}) should be rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn booleans_round_trip_and_other_types_are_rejected() {
    same("bools", json!(true)).await;
    same("bools", json!(false)).await;
    let errors = rejected("bools", json!("true")).await;
    assert_eq!(errors[0].message, "expected boolean, got string");
}

#[tokio::test]
async fn every_integer_type_accepts_exactly_its_range() {
    let cases: &[(&str, i128, i128)] = &[
        ("s8s", i8::MIN.into(), i8::MAX.into()),
        ("u8s", 0, u8::MAX.into()),
        ("s16s", i16::MIN.into(), i16::MAX.into()),
        ("u16s", 0, u16::MAX.into()),
        ("s32s", i32::MIN.into(), i32::MAX.into()),
        ("u32s", 0, u32::MAX.into()),
        ("s64s", i64::MIN.into(), i64::MAX.into()),
        ("u64s", 0, u64::MAX.into()),
    ];
    for &(func, min, max) in cases {
        same(func, number(min)).await;
        same(func, number(max)).await;
        same(func, json!(0)).await;
        // One past each end, written exactly (past 64 bits too).
        rejected(func, number_or_float(min - 1)).await;
        rejected(func, number_or_float(max + 1)).await;
        rejected(func, json!(1.5)).await;
        rejected(func, json!("1")).await;
    }
}

#[tokio::test]
async fn integral_floats_are_integers() {
    assert_eq!(roundtrip("u32s", json!(7.0)).await.unwrap(), json!(7));
    assert_eq!(
        roundtrip("u64s", json!(1e19)).await.unwrap(),
        json!(10_000_000_000_000_000_000u64)
    );
    // 2^64 as a float is one past u64::MAX.
    rejected("u64s", json!(18446744073709551616.0)).await;
}

fn number(n: i128) -> Value {
    if let Ok(i) = i64::try_from(n) {
        json!(i)
    } else {
        json!(u64::try_from(n).unwrap())
    }
}

/// `n` as JSON written out exactly, even past the 64-bit range.
fn number_or_float(n: i128) -> Value {
    serde_json::from_str(&n.to_string()).unwrap()
}

#[tokio::test]
async fn floats_round_trip_including_non_finite_values() {
    same("f64s", json!(1.5)).await;
    same("f64s", json!(-0.25)).await;
    same("f64s", json!(f64::MAX)).await;
    same("f32s", json!(0.5)).await;
    same("f32s", json!(f32::MAX as f64)).await;
    for special in ["NaN", "Infinity", "-Infinity"] {
        same("f64s", json!(special)).await;
        same("f32s", json!(special)).await;
    }
    rejected("f32s", json!(1e39)).await;
    rejected("f64s", json!("nan")).await;
    rejected("f64s", json!(null)).await;
}

#[tokio::test]
async fn chars_are_exactly_one_scalar_value() {
    same("chars", json!("a")).await;
    same("chars", json!("é")).await;
    same("chars", json!("🦀")).await;
    rejected("chars", json!("ab")).await;
    rejected("chars", json!("")).await;
    rejected("chars", json!(97)).await;
}

#[tokio::test]
async fn strings_round_trip() {
    same("strings", json!("")).await;
    same("strings", json!("hello, world — ünïcødé 🦀\n\"quoted\"")).await;
    rejected("strings", json!(["a"])).await;
}

#[tokio::test]
async fn lists_of_records_round_trip_with_absent_options_as_null() {
    same(
        "points",
        json!([{"x": 1, "y": -2, "label": "a"}, {"x": 0, "y": 0, "label": null}]),
    )
    .await;
    same("points", json!([])).await;
    // An absent option field is none, and comes back as null.
    let got = roundtrip("points", json!([{"x": 1, "y": 2}]))
        .await
        .unwrap();
    assert_eq!(got, json!([{"x": 1, "y": 2, "label": null}]));
}

#[tokio::test]
async fn record_errors_point_at_the_offending_field() {
    let errors = rejected("points", json!([{"x": 1, "y": 2}, {"x": "one", "z": 3}])).await;
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"/v/1/x"), "{errors:?}");
    assert!(paths.contains(&"/v/1/y"), "{errors:?}");
    assert!(paths.contains(&"/v/1/z"), "{errors:?}");
}

#[tokio::test]
async fn kebab_case_field_names_are_kept_as_written() {
    same("kebab", json!({"first-name": "Ada", "is-admin": true})).await;
    rejected("kebab", json!({"first_name": "Ada", "is_admin": true})).await;
}

#[tokio::test]
async fn tuples_have_fixed_length() {
    same("tuples", json!([7, "seven", true])).await;
    rejected("tuples", json!([7, "seven"])).await;
    rejected("tuples", json!([7, "seven", true, 1])).await;
    rejected("tuples", json!(["7", "seven", true])).await;
}

#[tokio::test]
async fn enums_are_case_names() {
    same("colors", json!("green")).await;
    rejected("colors", json!("purple")).await;
    rejected("colors", json!(1)).await;
}

#[tokio::test]
async fn flags_are_arrays_of_unique_names() {
    same("perms-of", json!([])).await;
    same("perms-of", json!(["read", "exec"])).await;
    same("perms-of", json!(["read", "write", "exec"])).await;
    rejected("perms-of", json!(["read", "read"])).await;
    rejected("perms-of", json!(["fly"])).await;
    rejected("perms-of", json!("read")).await;
}

#[tokio::test]
async fn variants_with_and_without_payload() {
    same("shapes", json!("none")).await;
    same("shapes", json!({"circle": 2.5})).await;
    same("shapes", json!({"rect": [1.0, 2.0]})).await;
    same("shapes", json!({"poly": [{"x": 1, "y": 2, "label": null}]})).await;
    rejected("shapes", json!("circle")).await;
    rejected("shapes", json!({"none": null})).await;
    rejected("shapes", json!({"hexagon": 1})).await;
    rejected("shapes", json!({"circle": 1, "rect": [1, 2]})).await;
}

#[tokio::test]
async fn options_are_null_or_the_value() {
    same("options", json!(null)).await;
    same("options", json!(5)).await;
    rejected("options", json!({"some": 5})).await;
    // An absent optional parameter is none.
    let out = run("types", "roundtrip.options", json!({})).await.unwrap();
    assert_eq!(out.result, Some(json!(null)));
}

#[tokio::test]
async fn nested_options_stay_unambiguous() {
    same("nested-options", json!(null)).await;
    same("nested-options", json!({"some": null})).await;
    same("nested-options", json!({"some": "x"})).await;
    rejected("nested-options", json!("x")).await;
    rejected("nested-options", json!({"some": 1})).await;
}

#[tokio::test]
async fn results_are_ok_or_err_objects() {
    same("results", json!([{"ok": 1}, {"err": "bad"}])).await;
    same("unit-results", json!([{"ok": null}, {"err": null}])).await;
    rejected("results", json!([{"ok": 1, "err": "x"}])).await;
    rejected("results", json!([{"fine": 1}])).await;
    rejected("unit-results", json!([{"ok": 1}])).await;
}

#[tokio::test]
async fn nested_lists_round_trip() {
    same("nested-lists", json!([[1, -2], [], [i64::MAX]])).await;
    rejected("nested-lists", json!([[1], [2.5]])).await;
}

#[tokio::test]
async fn several_parameters_with_an_optional_one() {
    let out = run(
        "types",
        "roundtrip.many",
        json!({"count": 3, "tags": ["a", "b"]}),
    )
    .await
    .unwrap();
    assert_eq!(out.result, Some(json!("3::a,b")));
    let out = run(
        "types",
        "roundtrip.many",
        json!({"count": 3, "name": "n", "tags": []}),
    )
    .await
    .unwrap();
    assert_eq!(out.result, Some(json!("3:n:")));
}

#[tokio::test]
async fn all_parameter_errors_are_reported_at_once() {
    let err = run(
        "types",
        "roundtrip.many",
        json!({"count": -1, "name": 5, "extra": 1}),
    )
    .await
    .unwrap_err();
    let ExecuteError::InvalidParams(errors) = err else {
        panic!("expected invalid params, got {err}");
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for expected in ["/count", "/name", "/tags", "/extra"] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {errors:?}"
        );
    }
}

#[tokio::test]
async fn top_level_exports_sit_next_to_interface_exports() {
    let out = run("types", "add", json!({"a": i64::MAX, "b": 1}))
        .await
        .unwrap();
    assert_eq!(out.result, Some(json!(i64::MIN)));
    let out = run("types", "nothing", json!({})).await.unwrap();
    assert_eq!(out.status, Status::Succeeded);
    assert_eq!(out.result, Some(Value::Null));
}

#[tokio::test]
async fn a_top_level_result_err_fails_the_execution_with_the_error_value() {
    let out = run("types", "checked", json!({"v": 4})).await.unwrap();
    assert_eq!(out.status, Status::Succeeded);
    assert_eq!(out.result, Some(json!(4)));
    let out = run("types", "checked", json!({"v": -4})).await.unwrap();
    assert_eq!(out.status, Status::Failed);
    assert_eq!(out.error, Some(json!("negative")));
    assert_eq!(out.result, None);
}

#[tokio::test]
async fn errors_inside_alternatives_point_at_the_bad_value_with_a_precise_message() {
    let errors = rejected("shapes", json!({"rect": [1.0, "wide"]})).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "/v/rect/1");
    assert!(
        errors[0].message.starts_with("expected number"),
        "{errors:?}"
    );
    let errors = rejected("f64s", json!("oops")).await;
    assert_eq!(errors[0].path, "/v");
    assert!(errors[0].message.contains("got string"), "{errors:?}");
}
