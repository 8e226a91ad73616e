//! How the client commands print: JSON as the API sent it (`--json`, and
//! records), or aligned tables whose times read as local RFC 3339.

use std::fmt::Display;
use std::io::Write;

use chrono::{SecondsFormat, TimeZone};
use serde_json::Value;

/// Prints pretty JSON on stdout; a closed pipe (`| head`) is not an error.
pub(super) fn print_json(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_default()
    );
}

/// Prints `items` as an aligned table of `columns`.
///
/// A column named `…_at` holds a time in Unix milliseconds, as every time
/// the API sends does; its cells show the local time in RFC 3339 to the
/// second (`2026-12-07T02:52:02+01:00`). `--json` keeps the milliseconds.
pub(super) fn table(items: &Value, columns: &[&str]) {
    let rows: Vec<Vec<String>> = items
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            columns
                .iter()
                .map(|c| cell(c, &item[*c], &chrono::Local))
                .collect()
        })
        .collect();
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", render(columns, &rows));
}

/// The table's text: a header of upper-cased column names, then the rows,
/// each column as wide as its widest cell.
fn render(columns: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut text = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string();
        text.push('\n');
        text
    };
    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    std::iter::once(line(&header))
        .chain(rows.iter().map(|r| line(r)))
        .collect()
}

/// One cell: `-` for null, a string's first line, a time column's
/// milliseconds as RFC 3339 in `tz`, anything else as JSON.
fn cell<Tz: TimeZone>(column: &str, v: &Value, tz: &Tz) -> String
where
    Tz::Offset: Display,
{
    match v {
        Value::Null => "-".to_string(),
        // One line, and no control character a terminal would act on (a
        // prompt or a reason may hold what someone else wrote).
        Value::String(s) => s
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect(),
        Value::Number(n) if column.ends_with("_at") => n
            .as_i64()
            .and_then(|ms| rfc3339(ms, tz))
            .unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

/// Unix milliseconds as RFC 3339 in `tz`, to the second; `None` out of range.
fn rfc3339<Tz: TimeZone>(ms: i64, tz: &Tz) -> Option<String>
where
    Tz::Offset: Display,
{
    tz.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};
    use serde_json::json;

    #[test]
    fn time_columns_show_rfc3339_in_the_zone_to_the_second() {
        let ms = json!(1_796_608_322_731_i64);
        let india = FixedOffset::east_opt(5 * 3600 + 1800).unwrap();
        assert_eq!(cell("created_at", &ms, &Utc), "2026-12-07T01:52:02+00:00");
        assert_eq!(
            cell("next_run_at", &ms, &india),
            "2026-12-07T07:22:02+05:30"
        );
        assert_eq!(cell("revoked_at", &Value::Null, &Utc), "-");
    }

    #[test]
    fn other_columns_and_odd_times_are_shown_as_they_are() {
        assert_eq!(
            cell("id", &json!(1_796_608_322_731_i64), &Utc),
            "1796608322731"
        );
        assert_eq!(cell("every_ms", &json!(10000), &Utc), "10000");
        assert_eq!(cell("created_at", &json!(1.5), &Utc), "1.5");
        assert_eq!(
            cell("created_at", &json!(i64::MAX), &Utc),
            i64::MAX.to_string()
        );
        assert_eq!(cell("description", &json!("one\ntwo"), &Utc), "one");
        assert_eq!(
            cell("prompt", &json!("ok?\u{1b}[2J\u{7}"), &Utc),
            "ok?\u{fffd}[2J\u{fffd}",
            "no escape sequence reaches the terminal"
        );
        assert_eq!(cell("enabled", &json!(true), &Utc), "true");
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![
            vec!["1".to_string(), "core.echo".to_string()],
            vec!["12".to_string(), "-".to_string()],
        ];
        assert_eq!(
            render(&["id", "action"], &rows),
            "ID  ACTION\n1   core.echo\n12  -\n"
        );
    }
}
