//! Test guest for replay: one probe of every host source a journal records.
const EXTRA: bool = false;
const MOVED: bool = false;
include!("probe.rs");
