//! The host side of the `attune:action` WIT package, generated once; each
//! host interface's module implements its part.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "attune:action/action",
    // Key-value calls wait on the database or the worker API.
    imports: { "attune:action/kv": async },
    additional_derives: [PartialEq],
});
