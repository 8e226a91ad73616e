//! Small helpers every layer uses and that use nothing of Attune: durations
//! and sizes as people write them, files only their owner may read, the
//! arithmetic of timer schedules, and TLS material from PEM files.

pub mod files;
pub mod schedule;
pub mod tls;
pub mod units;
