//! Loading components: validation, introspection (schemas, docs,
//! capabilities), refusals, and the precompiled-artifact cache.

use attune_runtime::{CacheOutcome, LoadError, Runtime, RuntimeConfig};
use serde_json::json;
use support::{guest_bytes, pack, runtime};

#[test]
fn the_core_pack_lists_its_actions_with_docs_from_the_sdk() {
    let core = pack("core");
    let names: Vec<&str> = core
        .actions()
        .iter()
        .map(|a| a.info().name.as_str())
        .collect();
    assert_eq!(names, ["echo", "noop", "sleep", "fail", "http"]);
    let echo = core.action("echo").unwrap().info();
    assert_eq!(
        echo.description.as_deref(),
        Some("Prints `message` to stdout and returns it unchanged.")
    );
    assert_eq!(echo.params_schema["description"], json!(echo.description));
    assert_eq!(
        echo.params_schema["properties"]["message"],
        json!({"type": "string"})
    );
    assert_eq!(echo.params_schema["required"], json!(["message"]));
    assert_eq!(echo.result_schema, json!({"type": "string"}));
    assert_eq!(
        core.description(),
        Some("Attune's core pack: the actions every installation has.")
    );
}

#[test]
fn a_result_return_splits_into_result_and_error_schemas() {
    let core = pack("core");
    let fail = core.action("fail").unwrap().info();
    assert_eq!(fail.result_schema, json!({"type": "null"}));
    let err = fail.error_schema.as_ref().unwrap();
    assert_eq!(err["properties"]["code"]["type"], "integer");
    assert_eq!(err["required"], json!(["code", "message"]));
    // `message: option<string>` is not required.
    assert_eq!(fail.params_schema["required"], json!([]));
}

#[test]
fn capabilities_come_from_imports_beyond_standard_wasi() {
    let core = pack("core");
    assert_eq!(
        core.capabilities(),
        [
            "wasi-p2-component",
            "attune:action/log@0.1.0",
            "wasi:http/types@0.2",
            "wasi:http/outgoing-handler@0.2"
        ],
        "core.http sends requests; unused attune interfaces are not imported"
    );
    assert!(
        core.imports()
            .iter()
            .any(|i| i.starts_with("wasi:cli/stdout"))
    );
    // Plain wit-bindgen guest that imports no attune interface.
    assert_eq!(pack("types").capabilities(), ["wasi-p2-component"]);
}

#[test]
fn components_without_embedded_docs_have_no_description() {
    let types = pack("types");
    let add = types.action("add").unwrap().info();
    assert_eq!(add.description, None);
    assert!(types.action("roundtrip.u64s").is_some());
}

#[test]
fn a_resource_in_a_signature_is_refused_naming_function_and_place() {
    let err = runtime().load(&guest_bytes("resourceful")).unwrap_err();
    let LoadError::Unsupported { action, place, .. } = &err else {
        panic!("expected Unsupported, got {err}");
    };
    assert!(action.starts_with("things."), "{err}");
    assert!(place == "result" || place.starts_with("parameter"), "{err}");
    assert!(err.to_string().contains("a resource cannot cross"), "{err}");
}

#[test]
fn an_import_the_host_does_not_provide_is_refused() {
    let err = runtime().load(&guest_bytes("needy")).unwrap_err();
    assert!(matches!(err, LoadError::MissingImport(_)), "{err}");
    assert!(err.to_string().contains("test:needy/elsewhere"), "{err}");
}

#[test]
fn garbage_and_core_modules_are_refused_with_a_hint() {
    let err = runtime().load(b"not wasm at all").unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err}");
    // The smallest core module: magic + version 1.
    let err = runtime().load(b"\0asm\x01\0\0\0").unwrap_err();
    assert!(err.to_string().contains("core module"), "{err}");
    // A component header followed by junk.
    let err = runtime().load(b"\0asm\x0d\0\x01\0junk").unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err}");
}

#[test]
fn oversized_components_are_refused_before_compiling() {
    let rt = Runtime::new(RuntimeConfig {
        max_component_bytes: 1024,
        max_instances: 1,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let err = rt.load(&guest_bytes("core")).unwrap_err();
    assert!(
        matches!(err, LoadError::TooLarge { limit: 1024, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_second_load_uses_the_cached_artifact_and_behaves_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let config = || RuntimeConfig {
        cache_dir: Some(dir.path().join("artifacts")),
        max_instances: 2,
        ..RuntimeConfig::default()
    };
    let bytes = guest_bytes("core");
    let (first, outcome) = Runtime::new(config()).unwrap().load(&bytes).unwrap();
    assert_eq!(outcome, CacheOutcome::Compiled);
    let artifacts = std::fs::read_dir(dir.path().join("artifacts"))
        .unwrap()
        .count();
    assert_eq!(artifacts, 1);

    let rt = Runtime::new(config()).unwrap();
    let (second, outcome) = rt.load(&bytes).unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
    assert_eq!(first.digest(), second.digest());
    let out = second
        .execute(
            &rt,
            attune_runtime::ExecutionRequest::new("echo", json!({"message": "cached"})),
        )
        .await
        .unwrap();
    assert_eq!(out.result, Some(json!("cached")));
}

#[test]
fn a_corrupt_artifact_is_discarded_and_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        max_instances: 1,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::new(config).unwrap();
    let bytes = guest_bytes("core");
    rt.load(&bytes).unwrap();
    let artifact = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&artifact, b"garbage").unwrap();
    let (_, outcome) = rt.load(&bytes).unwrap();
    assert_eq!(outcome, CacheOutcome::Compiled);
}
