//! Test guest: the probe of `replayable`, calling another path.
const EXTRA: bool = false;
const MOVED: bool = true;
include!("../../replayable/src/probe.rs");
