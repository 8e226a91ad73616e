//! The records the engine hands its surfaces: storage's plain rows and
//! their filters, re-exported so the API, the console and MCP name only
//! the engine.

pub use attune_storage::{
    ActionRecord, AttemptRecord, EnforcementRecord, EventRecord, ExecutionFilter, ExecutionRecord,
    ExecutionStatus, Finished, Grants, InquiryRecord, KvRecord, MAX_PAGE, PackRecord, Page,
    Refusal, Registered, Role, RuleFilter, RuleRecord, RuleSpec, SecretRecord, SensorRecord,
    SensorRunRecord, TokenRecord, TriggerTypeRecord, WorkerRecord, now_ms,
};
