//! What hostctl prints: JSON as the API answered it (`--json`), or tables and `key: value`
//! lines for people.

use serde_json::Value;

/// A column: its heading and where its value is in an item (a dotted path).
pub type Column = (&'static str, &'static str);

/// The item's value at a dotted path, as a table cell.
fn cell(item: &Value, path: &str) -> String {
    let mut v = item;
    for key in path.split('.') {
        v = &v[key];
    }
    scalar(v)
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Items as a table; the list's `items` when it is a page (with a line saying how to get the
/// next page).
pub fn table(answer: &Value, columns: &[Column]) -> String {
    let items: &[Value] = answer
        .get("items")
        .and_then(Value::as_array)
        .or_else(|| answer.as_array())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|(_, path)| clean(&cell(item, path)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (heading, _))| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([heading.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(columns.iter().map(|(h, _)| *h).collect(), &mut out);
    for r in &rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    if let Some(total) = answer.get("total").and_then(Value::as_i64) {
        out.push_str(&format!("({} of {total})", rows.len()));
        if let Some(next) = answer.get("next").and_then(Value::as_str) {
            out.push_str(&format!("; next page: {next}"));
        }
        out.push('\n');
    }
    out
}

/// One record as `key: value` lines, nested objects indented.
pub fn record(v: &Value) -> String {
    let mut out = String::new();
    write_record(v, 0, &mut out);
    out
}

fn write_record(v: &Value, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        write_record(v, depth + 1, out);
                    }
                    Value::Array(a) if a.iter().any(|x| x.is_object()) => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        for x in a {
                            out.push_str(&format!("{pad}  -\n"));
                            write_record(x, depth + 2, out);
                        }
                    }
                    _ => out.push_str(&format!("{pad}{k}: {}\n", clean(&scalar(v)))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", clean(&scalar(other)))),
    }
}

/// What the API answers is shown on a terminal: control characters (an escape sequence in a
/// task's error, a newline in a backup's description that would fake a line of its own) and
/// the bidirectional overrides that reorder what is shown are written as `\u{..}`, not obeyed.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
            if c.is_control() || bidi {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Writes to stdout; a reader that went away (`hostctl ... | head -1`) ends hostctl quietly
/// rather than with a panic.
pub fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_is_a_table_with_its_total_and_next_page() {
        let page = json!({"items": [{"id": 1, "domain": "a.example", "agent": {"state": "connected"}},
                                     {"id": 22, "domain": "bb.example", "agent": null}],
                          "total": 3, "next": "/api/v1/sites?after=22"});
        let t = table(
            &page,
            &[("ID", "id"), ("DOMAIN", "domain"), ("AGENT", "agent.state")],
        );
        assert_eq!(
            t,
            "ID  DOMAIN      AGENT\n1   a.example   connected\n22  bb.example  -\n(2 of 3); next page: /api/v1/sites?after=22\n"
        );
    }

    #[test]
    fn control_characters_from_the_api_are_shown_not_obeyed() {
        assert_eq!(clean("ok\u{1b}[2Jgone"), "ok\\u{1b}[2Jgone");
        assert_eq!(clean("a\nstatus: enabled"), "a\\u{a}status: enabled");
        assert_eq!(clean("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(record(&json!({"error": "x\u{7}"})), "error: x\\u{7}\n");
    }
}
