//! The host side of the `attune:action` WIT package, generated once; each
//! host interface's module implements its part.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "attune:action/action",
});
