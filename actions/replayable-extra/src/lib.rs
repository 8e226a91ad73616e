//! Test guest: the probe of `replayable`, returning one more field.
const EXTRA: bool = true;
const MOVED: bool = false;
include!("../../replayable/src/probe.rs");
