//! Built-in trigger types and the schedules of timer triggers.
//!
//! [`builtin`] lists the types with their parameter and payload schemas; they
//! are stored at startup so rules can be validated against them.
//! [`schedule`] turns a timer rule's parameters into next-fire times.

mod builtin_types;
pub mod schedule;

pub use builtin_types::builtin;
