//! Small helpers every layer uses and that use nothing of Attune: durations
//! and sizes as people write them, files only their owner may read, and the
//! arithmetic of timer schedules.

pub mod files;
pub mod schedule;
pub mod units;
