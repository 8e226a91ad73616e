//! The security regression suite: attacks once found against a release,
//! replayed as a caller with each role would make them, on both backends.
//! Each test fails on a server that lets its attack through.
//!
//! - [`secrets`]: reading a secret through templates, dry runs and the
//!   output cap; rules that feed each other without end.
//! - [`identity`]: webhook keys under names nobody else can write; workers
//!   that only their owner can act as.
//!
//! The outbound address filter and MCP's attacks live beside their
//! subjects (`outbound`, `mcp`).

mod identity;
mod secrets;
