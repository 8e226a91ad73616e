//! SQL text shared by several tables' queries: placeholder lists for
//! multi-row statements, inlined id lists, and the column lists of rules and
//! executions.

/// `($1, $2, …), ($n, …)`: `rows` tuples of `cols` placeholders each, each
/// ending with `literals` when given (constant columns).
pub(super) fn rows_of(rows: usize, cols: usize, literals: Option<&str>) -> String {
    rows_from(rows, cols, 1, literals)
}

/// [`rows_of`] numbering from `$first` (after parameters bound before the rows).
pub(super) fn rows_from(rows: usize, cols: usize, first: usize, literals: Option<&str>) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|row| {
            let mut fields: Vec<String> = (0..cols)
                .map(|c| format!("${}", first + row * cols + c))
                .collect();
            fields.extend(literals.map(str::to_string));
            format!("({})", fields.join(", "))
        })
        .collect();
    tuples.join(", ")
}

/// `1, 2, 3` for an SQL `IN (…)` list: ids are integers read back from the
/// database, so they are inlined rather than bound (`NULL` for none, which
/// matches nothing).
pub(super) fn id_list(ids: &[i64]) -> String {
    if ids.is_empty() {
        return "NULL".into();
    }
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    ids.join(", ")
}

/// The columns a [`RuleSpec`] fills, in the order [`bind_rule!`] binds them
/// (`$1` to `$10`, then the time as `$11`).
pub(super) const RULE_FIELDS: &str = "ref, description, trigger, trigger_params, criteria, action, action_params, enabled, timeout_ms, max_attempts";

pub(super) const RULE_COLUMNS: &str = "id, ref, description, trigger, trigger_params, criteria, action, action_params, enabled, timeout_ms, max_attempts, created_at, updated_at, disabled_reason";

/// An execution's insert; its rows come from [`execution_rows`] and
/// [`bind_execution!`].
pub(super) const INSERT_EXECUTION: &str = "INSERT INTO execution (action, params, status_reason, capabilities, rule, enforcement, \
     max_attempts, timeout_ms, created_at, sealed_params, parent, task, sensor, source, not_before, status, started_at, attempt)";

/// The values of `n` rows of [`INSERT_EXECUTION`]. A batch of plain runs
/// ([`NewExecution::is_plain`]: no parent, task, sensor, source or delay)
/// binds 10 columns a row and writes the rest as literals: SQLite's driver
/// looks each parameter up by name, so a statement's cost grows with the
/// square of its parameters, and most batches are plain.
pub(super) fn execution_rows(n: usize, plain: bool) -> String {
    if plain {
        rows_of(
            n,
            10,
            Some("NULL, NULL, NULL, NULL, 0, 'requested', NULL, 1"),
        )
    } else {
        rows_of(n, 17, Some("1"))
    }
}

pub(super) const EXECUTION_COLUMNS: &str = "id, action, params, status, status_reason, capabilities, rule, enforcement, attempt, max_attempts, \
     timeout_ms, worker, result, error, stdout, stderr, logs, created_at, scheduled_at, started_at, finished_at, cancel_requested, sealed_params, parent, task, sensor, source";

#[cfg(test)]
mod tests {
    use super::{id_list, rows_from, rows_of};

    #[test]
    fn placeholders_number_on_across_rows_and_literals_close_each_row() {
        assert_eq!(rows_of(1, 2, None), "($1, $2)");
        assert_eq!(
            rows_of(2, 3, Some("'requested', 1")),
            "($1, $2, $3, 'requested', 1), ($4, $5, $6, 'requested', 1)"
        );
        // After one parameter bound ahead of the rows.
        assert_eq!(rows_from(2, 2, 2, None), "($2, $3), ($4, $5)");
    }

    #[test]
    fn plain_execution_rows_bind_ten_columns_and_others_seventeen() {
        let plain = super::execution_rows(2, true);
        assert!(plain.starts_with("($1, $2,"), "{plain}");
        assert!(
            plain.contains("$10, NULL, NULL, NULL, NULL, 0, 'requested', NULL, 1), ($11,"),
            "{plain}"
        );
        let full = super::execution_rows(1, false);
        assert!(full.ends_with("$16, $17, 1)"), "{full}");
    }

    #[test]
    fn id_lists_are_never_empty() {
        assert_eq!(id_list(&[3, 12]), "3, 12");
        assert_eq!(
            id_list(&[]),
            "NULL",
            "an empty IN list would be a syntax error"
        );
    }
}
