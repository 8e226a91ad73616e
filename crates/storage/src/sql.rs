//! SQL text shared by several tables' queries: placeholder lists for
//! multi-row statements, id sets, and the column lists of rules and
//! executions; and reading the ids a multi-row insert assigned.

use futures_util::TryStreamExt;
use sqlx::Either;

use super::Dialect;
use super::records::NewExecution;

/// `($1, $2, …), ($n, …)` on PostgreSQL, `(?, ?, …), …` on SQLite: `rows`
/// tuples of `cols` placeholders each, each ending with `literals` when
/// given (constant columns). The rows' values are bound in order, first in
/// the statement; a parameter after them is [`param`]`(dialect, rows * cols
/// + 1)`.
///
/// SQLite binds a numbered parameter (`$n`) by looking its name up in a
/// list of the statement's names, one by one, so binding a batch of n of
/// them costs n² steps: a few milliseconds for a batch of thousands, on
/// the one connection every write waits for. Anonymous ones are bound by
/// position.
pub(super) fn rows_of(
    dialect: Dialect,
    rows: usize,
    cols: usize,
    literals: Option<&str>,
) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|row| {
            let mut fields: Vec<String> = (0..cols)
                .map(|c| param(dialect, row * cols + c + 1))
                .collect();
            fields.extend(literals.map(str::to_string));
            format!("({})", fields.join(", "))
        })
        .collect();
    tuples.join(", ")
}

/// The `n`th parameter of a statement whose parameters appear in the
/// order they are bound (see [`rows_of`]).
pub(super) fn param(dialect: Dialect, n: usize) -> String {
    match dialect {
        Dialect::Sqlite => "?".into(),
        Dialect::Postgres => format!("${n}"),
    }
}

/// `IN (…)` over the ids bound as parameter `$param` (see [`id_array`]).
/// The statement's text is the same for every set, so it is prepared once
/// and stays in the connection's statement cache, where an inlined list
/// would be parsed and planned again for each batch (and evict the cached
/// statements that are reused).
pub(super) fn id_in(dialect: Dialect, param: usize) -> String {
    match dialect {
        Dialect::Sqlite => format!("IN (SELECT value FROM json_each(${param}))"),
        Dialect::Postgres => format!("= ANY(CAST(${param} AS bigint[]))"),
    }
}

/// The value to bind for an [`id_in`] parameter: a JSON array on SQLite, an
/// array literal on PostgreSQL.
pub(super) fn id_array(dialect: Dialect, ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    match dialect {
        Dialect::Sqlite => format!("[{}]", ids.join(",")),
        Dialect::Postgres => format!("{{{}}}", ids.join(",")),
    }
}

/// A condition true when every capability `execution` needs is among
/// those bound (a JSON array) as parameter `param`.
pub(super) fn capabilities_covered(dialect: Dialect, param: usize) -> String {
    match dialect {
        Dialect::Sqlite => format!(
            "NOT EXISTS (SELECT 1 FROM json_each(execution.capabilities) AS needed \
             WHERE needed.value NOT IN (SELECT value FROM json_each(${param})))"
        ),
        Dialect::Postgres => format!("execution.capabilities <@ CAST(${param} AS jsonb)"),
    }
}

/// What an insert ends with so that [`inserted_ids`] can read its ids:
/// nothing on SQLite (the connection knows the last id), `RETURNING id` on
/// PostgreSQL.
pub(super) fn returning_id(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "",
        Dialect::Postgres => " RETURNING id",
    }
}

/// What a statement did, read the same on both backends.
pub(super) trait Done {
    /// Rows it inserted, updated or deleted.
    fn rows(&self) -> u64;
    /// The id of the last row it inserted, where the connection tells.
    fn last_insert_id(&self) -> Option<i64>;
}

impl Done for sqlx::sqlite::SqliteQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
    fn last_insert_id(&self) -> Option<i64> {
        Some(self.last_insert_rowid())
    }
}

impl Done for sqlx::postgres::PgQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
    fn last_insert_id(&self) -> Option<i64> {
        None
    }
}

/// Runs a multi-row insert of `n` rows (ending with [`returning_id`]) and
/// returns the ids it assigned, in VALUES order; `None` when it inserted
/// fewer rows (an `ON CONFLICT DO NOTHING` skipped some).
///
/// SQLite assigns one statement's rows consecutive ids under its write
/// lock, in VALUES order, so the last one and the count give them all
/// without a row sent back per insert (each is a hand-off between the
/// driver's thread and the caller); PostgreSQL returns them, and assigns
/// them from its sequence in VALUES order too.
pub(super) async fn inserted_ids<'q, 'c, DB, E>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    executor: E,
    n: usize,
) -> Result<Option<Vec<i64>>, sqlx::Error>
where
    DB: sqlx::Database,
    DB::QueryResult: Done,
    i64: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    E: sqlx::Executor<'c, Database = DB>,
    'q: 'c,
{
    let mut returned = Vec::new();
    let mut last = None;
    let mut affected = 0;
    let mut steps = executor.fetch_many(query);
    while let Some(step) = steps.try_next().await? {
        match step {
            Either::Left(done) => {
                affected += done.rows();
                last = done.last_insert_id().or(last);
            }
            Either::Right(row) => returned.push(sqlx::Row::try_get(&row, 0)?),
        }
    }
    if affected != n as u64 {
        return Ok(None);
    }
    Ok(Some(match last {
        Some(last) if returned.is_empty() => (last - n as i64 + 1..=last).collect(),
        _ => {
            returned.sort_unstable();
            returned
        }
    }))
}

/// The columns a [`RuleSpec`] fills, in the order [`bind_rule!`] binds them
/// (`$1` to `$11`, then the time as `$12`).
pub(super) const RULE_FIELDS: &str = "ref, description, trigger, trigger_params, criteria, action, action_params, enabled, timeout_ms, max_attempts, policies";

pub(super) const RULE_COLUMNS: &str = "id, ref, description, trigger, trigger_params, criteria, action, action_params, enabled, timeout_ms, max_attempts, policies, created_at, updated_at, disabled_reason";

/// An execution's insert; its rows come from [`execution_rows`] and
/// [`bind_execution!`].
pub(super) const INSERT_EXECUTION: &str = "INSERT INTO execution (action, params, status_reason, capabilities, rule, enforcement, \
     max_attempts, timeout_ms, created_at, sealed_params, status, parent, task, sensor, source, not_before, started_at, depth, trace, requested_by, attempt)";

/// Which columns of [`INSERT_EXECUTION`] a batch binds; the rest are
/// written as literals, since each bound parameter costs, and most batches
/// set little.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// Every run is plain ([`NewExecution::is_plain`]) and `requested`:
    /// 10 columns.
    Plain,
    /// Every run is plain, some limited by a policy: the status too, 11.
    Status,
    /// Anything else: 20.
    Full,
}

impl Shape {
    /// The shape a batch of `runs` needs.
    pub(super) fn of<'a>(runs: impl IntoIterator<Item = &'a NewExecution>) -> Self {
        let mut shape = Shape::Plain;
        for e in runs {
            if !e.is_plain() {
                return Shape::Full;
            }
            if !e.gates.is_empty() {
                shape = Shape::Status;
            }
        }
        shape
    }
}

/// The values of `n` rows of [`INSERT_EXECUTION`] in `shape`.
pub(super) fn execution_rows(dialect: Dialect, n: usize, shape: Shape) -> String {
    match shape {
        Shape::Plain => rows_of(
            dialect,
            n,
            10,
            Some("'requested', NULL, NULL, NULL, NULL, 0, NULL, 0, NULL, NULL, 1"),
        ),
        Shape::Status => rows_of(
            dialect,
            n,
            11,
            Some("NULL, NULL, NULL, NULL, 0, NULL, 0, NULL, NULL, 1"),
        ),
        Shape::Full => rows_of(dialect, n, 20, Some("1")),
    }
}

/// What an [`EventRecord`](super::EventRecord) is read from.
pub(super) const EVENT_COLUMNS: &str =
    "id, trigger, payload, source, created_at, depth, held_reason, requested_by";

/// What an [`ExecutionRecord`](super::ExecutionRecord) is read from,
/// with the times it spent queued and running.
pub(super) const EXECUTION_COLUMNS: &str = "id, action, params, status, status_reason, capabilities, rule, enforcement, attempt, max_attempts, \
     timeout_ms, worker, result, error, stdout, stderr, logs, created_at, scheduled_at, started_at, finished_at, cancel_requested, sealed_params, parent, task, sensor, source, depth, \
     resources, trace, requested_by, started_at - created_at AS queued_ms, finished_at - started_at AS running_ms";

#[cfg(test)]
mod tests {
    use super::{Dialect, rows_of};

    #[test]
    fn placeholders_number_on_across_rows_and_literals_close_each_row() {
        let pg = Dialect::Postgres;
        assert_eq!(rows_of(pg, 1, 2, None), "($1, $2)");
        assert_eq!(
            rows_of(pg, 2, 3, Some("'requested', 1")),
            "($1, $2, $3, 'requested', 1), ($4, $5, $6, 'requested', 1)"
        );
        assert_eq!(super::param(pg, 5), "$5");
    }

    #[test]
    fn sqlite_rows_bind_by_position() {
        let lite = Dialect::Sqlite;
        assert_eq!(rows_of(lite, 2, 2, Some("1")), "(?, ?, 1), (?, ?, 1)");
        assert_eq!(super::param(lite, 5), "?");
    }

    #[test]
    fn plain_execution_rows_bind_ten_columns_gated_eleven_and_others_twenty() {
        let plain = super::execution_rows(Dialect::Postgres, 2, super::Shape::Plain);
        assert!(plain.starts_with("($1, $2,"), "{plain}");
        assert!(
            plain.contains(
                "$10, 'requested', NULL, NULL, NULL, NULL, 0, NULL, 0, NULL, NULL, 1), ($11,"
            ),
            "{plain}"
        );
        let status = super::execution_rows(Dialect::Postgres, 2, super::Shape::Status);
        assert!(
            status.contains("$11, NULL, NULL, NULL, NULL, 0, NULL, 0, NULL, NULL, 1), ($12,"),
            "{status}"
        );
        let full = super::execution_rows(Dialect::Postgres, 1, super::Shape::Full);
        assert!(full.ends_with("$19, $20, 1)"), "{full}");
    }

    #[test]
    fn id_sets_bind_one_parameter_whatever_their_size() {
        use super::{Dialect, id_array, id_in};
        assert_eq!(
            id_in(Dialect::Sqlite, 3),
            "IN (SELECT value FROM json_each($3))"
        );
        assert_eq!(id_in(Dialect::Postgres, 1), "= ANY(CAST($1 AS bigint[]))");
        assert_eq!(id_array(Dialect::Sqlite, &[3, 12]), "[3,12]");
        assert_eq!(id_array(Dialect::Postgres, &[3, 12]), "{3,12}");
        // An empty set matches nothing rather than failing to parse.
        assert_eq!(id_array(Dialect::Sqlite, &[]), "[]");
        assert_eq!(id_array(Dialect::Postgres, &[]), "{}");
    }
}
