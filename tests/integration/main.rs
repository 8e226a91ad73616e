//! Integration tests: everything that crosses subsystems, built as one binary.

mod agreement;
mod api;
mod console;
mod inquiries;
mod kv;
mod loading;
mod mapping;
mod mcp;
mod oci;
mod outbound;
mod pipeline;
mod policies;
mod replay;
mod resources;
mod sandbox;
mod secrets;
mod security;
mod sensors;
mod tracing;
mod workers;
mod workflows;
