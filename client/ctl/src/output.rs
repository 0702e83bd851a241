//! Printing results: `-o table` (human, kubectl-like columns) or `-o json` (one JSON document
//! per result, or one per line for streams).

use std::io::Write;

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

/// The `-o` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Where results go.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: Format,
}

impl Output {
    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// Prints `json` as pretty JSON, or the text `table` builds.
    pub fn emit<T: Serialize>(
        &self,
        json: &T,
        table: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        let text = match self.format {
            Format::Json => serde_json::to_string_pretty(json)?,
            Format::Table => table(),
        };
        print_line(&text)
    }

    /// Prints one item of a stream: a JSON line, or the text `line` builds.
    pub fn emit_line<T: Serialize>(
        &self,
        json: &T,
        line: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        let text = match self.format {
            Format::Json => serde_json::to_string(json)?,
            Format::Table => line(),
        };
        print_line(&text)
    }
}

/// Writes a line to stdout, flushing so that `watch` output appears at once even in a pipe.
pub fn print_line(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{}", text.trim_end_matches('\n')).and_then(|()| stdout.flush());
    match written {
        // The reader went away (`percyctl … | head`): stop quietly, as tools killed by
        // SIGPIPE do; Rust ignores SIGPIPE, so this is where that case surfaces.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}

/// Columns without borders, like `kubectl get`.
pub fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(|h| h.to_ascii_uppercase()));
    for row in rows {
        table.add_row(row);
    }
    trim_lines(&table.to_string())
}

/// `key: value` lines for one object, keys aligned.
pub fn details(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| format!("{:<width$}  {value}", format!("{key}:"), width = width + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A list for one table cell: "a,b", or "-" when empty.
pub fn list<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// "k=v,k2=v2" (sorted), or "-".
pub fn map<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut items: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    items.sort();
    list(&items)
}

/// A cell for a value where 0 or "" means "none".
pub fn or_dash(value: impl ToString) -> String {
    let text = value.to_string();
    if text.is_empty() || text == "0" {
        "-".to_owned()
    } else {
        text
    }
}

/// comfy-table pads every cell; trailing blanks only get in the way of `grep` and diffs.
fn trim_lines(text: &str) -> String {
    text.lines()
        .map(|line| line.trim_end().strip_prefix(' ').unwrap_or(line.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn tables_have_upper_case_headers_and_aligned_columns() {
        let text = table(
            &["id", "status"],
            vec![
                vec!["t1".to_owned(), "ready".to_owned()],
                vec!["long-id".to_owned(), "claimed".to_owned()],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ID"), "{text}");
        let column = lines[0].find("STATUS").unwrap();
        assert_eq!(lines[1].find("ready"), Some(column), "{text}");
        assert_eq!(lines[2].find("claimed"), Some(column), "{text}");
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn details_align_values() {
        let text = details(&[("id", "1".into()), ("status", "ready".into())]);
        assert_eq!(text, "id:      1\nstatus:  ready");
    }

    #[test]
    fn empty_cells_show_a_dash() {
        assert_eq!(list::<String>(&[]), "-");
        assert_eq!(list(&["a", "b"]), "a,b");
        assert_eq!(or_dash(0), "-");
        assert_eq!(or_dash(""), "-");
        assert_eq!(or_dash(5), "5");
        let labels: HashMap<String, String> =
            [("os".into(), "linux".into()), ("arch".into(), "x86".into())].into();
        assert_eq!(map(&labels), "arch=x86,os=linux");
    }
}
