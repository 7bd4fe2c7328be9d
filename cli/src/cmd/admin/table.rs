//! Aligned text tables of admin results. Times stay as the engine writes
//! them (RFC 3339 UTC); numbers are right-aligned.

use serde_json::Value;

/// A value as one cell: strings bare, `null` as `-`, lists joined.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn numeric(s: &str) -> bool {
    !s.is_empty() && s.parse::<f64>().is_ok()
}

/// Columns padded to their widest cell, two spaces apart, no trailing
/// blanks; with `numbers_right`, a column whose cells are all numbers is
/// right-aligned.
pub fn render(headers: &[&str], rows: &[Vec<String>], numbers_right: bool) -> String {
    let n = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    let mut right = vec![numbers_right && !rows.is_empty(); n];
    for row in rows {
        for (i, c) in row.iter().enumerate().take(n) {
            width[i] = width[i].max(c.chars().count());
            right[i] &= numeric(c) || c == "-";
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if right[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Fields shown first, in this order (what an operator looks for); the
/// rest follow alphabetically.
const FIRST: [&str; 24] = [
    "id",
    "order_id",
    "title",
    "name",
    "user_id",
    "activity_id",
    "product_id",
    "product_name",
    "phase",
    "status",
    "price_cents",
    "quantity",
    "amount_cents",
    "total_stock",
    "remaining",
    "sold_out",
    "per_user_limit",
    "limit",
    "starts_at",
    "ends_at",
    "starts_in_ms",
    "created_at",
    "pay_before",
    "lsn",
];

fn rank(key: &str) -> usize {
    FIRST.iter().position(|k| *k == key).unwrap_or(FIRST.len())
}

/// Nested objects as `parent.child` rows.
fn flatten(prefix: &str, v: &Value, rows: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            let mut keys: Vec<(&String, &Value)> = map.iter().collect();
            keys.sort_by(|a, b| (rank(a.0), a.0).cmp(&(rank(b.0), b.0)));
            for (k, child) in keys {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, child, rows);
            }
        }
        Value::Object(_) => rows.push(vec![prefix.to_string(), "-".into()]),
        other => rows.push(vec![prefix.to_string(), cell(other)]),
    }
}

/// Any result as FIELD / VALUE rows (nested objects flattened), values
/// left-aligned.
pub fn fields(v: &Value) -> String {
    let mut rows = Vec::new();
    match v {
        Value::Object(_) => flatten("", v, &mut rows),
        other => rows.push(vec!["result".into(), cell(other)]),
    }
    render(&["FIELD", "VALUE"], &rows, false)
}

const LIST_COLUMNS: [(&str, &str); 10] = [
    ("ID", "id"),
    ("TITLE", "title"),
    ("PHASE", "phase"),
    ("STATUS", "status"),
    ("PRICE_CENTS", "price_cents"),
    ("STOCK", "total_stock"),
    ("REMAINING", "remaining"),
    ("LIMIT", "per_user_limit"),
    ("STARTS_AT", "starts_at"),
    ("ENDS_AT", "ends_at"),
];

/// `activity.list`: one row per activity, then the total.
pub fn activities(v: &Value) -> String {
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> =
        items.iter().map(|a| LIST_COLUMNS.iter().map(|(_, k)| cell(&a[*k])).collect()).collect();
    let headers: Vec<&str> = LIST_COLUMNS.iter().map(|(h, _)| *h).collect();
    let mut s = render(&headers, &rows, true);
    let total = v["total"].as_u64().unwrap_or(items.len() as u64);
    s.push_str(&format!("{} of {total} activities\n", items.len()));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_and_numbers_go_right() {
        let t = render(&["ID", "TITLE"], &[vec!["1".into(), "phone".into()], vec!["10".into(), "tv".into()]], true);
        assert_eq!(t, "ID  TITLE\n 1  phone\n10  tv\n");
    }

    #[test]
    fn nested_results_flatten() {
        let t = fields(&json!({"durable_lsn": 7, "persister": {"lag_records": 0, "last_error": null}, "q": [1, 2]}));
        assert_eq!(
            t,
            "FIELD                  VALUE\ndurable_lsn            7\npersister.lag_records  0\n\
             persister.last_error   -\nq                      1, 2\n"
        );
    }

    #[test]
    fn activity_lists_have_a_row_each_and_a_total() {
        let a = json!({"id": 1, "title": "phone", "phase": "ongoing", "status": "active", "price_cents": 99900,
            "total_stock": 100, "remaining": 98, "per_user_limit": 1,
            "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"});
        let t = activities(&json!({"items": [a], "total": 1}));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("ID  TITLE  PHASE"), "{t}");
        assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>()[..3], ["1", "phone", "ongoing"]);
        assert_eq!(lines[2], "1 of 1 activities");
    }
}
