//! Where an execution stands: the lifecycle every layer speaks of, stored
//! as its name.

use serde::{Deserialize, Serialize};

/// The final statuses as an SQL list, `('succeeded', …)`, for `concat!`
/// into a query: a literal, so the statement stays static, and checked
/// against [`ExecutionStatus::is_finished`] by a test.
macro_rules! finished_statuses_sql {
    () => {
        "('succeeded', 'failed', 'timed_out', 'cancelled', 'abandoned')"
    };
}

/// Where an execution stands. `delayed` waits for a policy's limit to
/// let it through, `requested` waits for a worker that can serve it,
/// `scheduled` is claimed by one, `running` has begun, `pending` (a
/// workflow's `ask` or `wait` task) waits for an answer or an event; the
/// other five are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Waiting for a policy (concurrency or rate) to let it through.
    Delayed,
    /// Waiting for a worker that can serve it.
    Requested,
    /// Claimed by a worker, not begun.
    Scheduled,
    /// Begun.
    Running,
    /// Waiting for a person's answer or an event; no worker runs it.
    Pending,
    /// Ended with a result.
    Succeeded,
    /// Ended with an error or a trap.
    Failed,
    /// Ran out of time.
    TimedOut,
    /// Cancelled before or while it ran.
    Cancelled,
    /// Its worker vanished with no attempt left.
    Abandoned,
}

impl ExecutionStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [ExecutionStatus; 10] = [
        Self::Delayed,
        Self::Requested,
        Self::Scheduled,
        Self::Running,
        Self::Pending,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Cancelled,
        Self::Abandoned,
    ];

    /// The status's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delayed => "delayed",
            Self::Requested => "requested",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Abandoned => "abandoned",
        }
    }

    /// Parses a status name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether it is final: nothing more will happen to the execution.
    pub fn is_finished(self) -> bool {
        !matches!(
            self,
            Self::Delayed | Self::Requested | Self::Scheduled | Self::Running | Self::Pending
        )
    }

    /// Whether a worker may report it as how a run ended (`abandoned` is
    /// the server's decision, never a worker's).
    pub fn is_reportable(self) -> bool {
        self.is_finished() && self != Self::Abandoned
    }
}

impl TryFrom<String> for ExecutionStatus {
    type Error = super::UnknownName;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::parse(&name).ok_or(super::UnknownName {
            kind: "execution status",
            name,
        })
    }
}

/// `sqlx` reads and writes `$t` as its name (`as_str`, `TryFrom<String>`):
/// read back, a name that is none of its values is an error decoding the
/// row ([`UnknownName`](crate::UnknownName)).
macro_rules! stored_as_name {
    ($t:ty) => {
        impl<DB: sqlx::Database> sqlx::Type<DB> for $t
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $t
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(Self::try_from(<String as sqlx::Decode<'r, DB>>::decode(
                    value,
                )?)?)
            }
        }
    };
}

stored_as_name!(ExecutionStatus);

impl std::fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ExecutionStatus;

    #[test]
    fn the_sql_list_of_final_statuses_is_the_enums() {
        let listed: Vec<&str> = finished_statuses_sql!()
            .trim_matches(|c| c == '(' || c == ')')
            .split(", ")
            .map(|s| s.trim_matches('\''))
            .collect();
        let finished: Vec<&str> = ExecutionStatus::ALL
            .into_iter()
            .filter(|s| s.is_finished())
            .map(ExecutionStatus::as_str)
            .collect();
        assert_eq!(listed, finished);
    }
}
