//! How the client commands print: JSON as the API sent it, or aligned
//! tables.

use serde_json::Value;

pub(super) fn print_json(v: &Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_default()
    );
}

/// Prints `items` as an aligned table of `columns`.
pub(super) fn table(items: &Value, columns: &[&str]) {
    use std::io::Write;
    let cell = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.lines().next().unwrap_or_default().to_string(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = items
        .as_array()
        .into_iter()
        .flatten()
        .map(|item| columns.iter().map(|c| cell(&item[*c])).collect())
        .collect();
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
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let _ = writeln!(
        out,
        "{}",
        line(columns.iter().map(|c| c.to_uppercase()).collect())
    );
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
}
