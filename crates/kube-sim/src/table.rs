//! `meta.k8s.io/v1 Table` output (what `kubectl get` asks for): default
//! columns per kind, CRD `additionalPrinterColumns` via a small JSONPath
//! subset, and human-readable ages.

use crate::resources::ResourceInfo;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// `5s`, `3m20s`, `2h`, `4d` — the API server's short duration format.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        format!("{m}m{}s", s % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        format!("{d}d{}h", h % 24)
    } else {
        format!("{d}d")
    }
}

fn age(ts: Option<&str>, now: DateTime<Utc>) -> String {
    match ts.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => human_duration((now - t.with_timezone(&Utc)).num_seconds()),
        None => "<unknown>".to_string(),
    }
}

/// Evaluate the JSONPath subset CRDs use: `.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`.
pub fn json_path(obj: &Value, path: &str) -> Option<Value> {
    let mut current = vec![obj.clone()];
    let mut rest = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('.');
    while !rest.is_empty() {
        let (segment, tail) = split_segment(rest);
        rest = tail.trim_start_matches('.');
        let (name, selector) = match segment.find('[') {
            Some(i) => (&segment[..i], Some(&segment[i + 1..segment.len() - 1])),
            None => (segment, None),
        };
        if !name.is_empty() {
            current = current
                .iter()
                .filter_map(|v| v.get(name).cloned())
                .collect();
        }
        if let Some(sel) = selector {
            let mut next = Vec::new();
            for v in &current {
                let Some(items) = v.as_array() else { continue };
                if let Some(filter) = sel.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                    let (k, want) = filter.split_once("==")?;
                    let want = want.trim().trim_matches('"').trim_matches('\'');
                    next.extend(
                        items
                            .iter()
                            .filter(|i| i.get(k.trim()).and_then(Value::as_str) == Some(want))
                            .cloned(),
                    );
                } else if let Ok(idx) = sel.parse::<usize>() {
                    next.extend(items.get(idx).cloned());
                } else if sel == "*" {
                    next.extend(items.iter().cloned());
                }
            }
            current = next;
        }
    }
    current.into_iter().next()
}

fn split_segment(s: &str) -> (&str, &str) {
    // A segment ends at the first '.' outside brackets.
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            '.' if depth == 0 => return (&s[..i], &s[i..]),
            _ => {}
        }
    }
    (s, "")
}

fn cell(v: Option<Value>, kind: &str, now: DateTime<Utc>) -> Value {
    match (v, kind) {
        (Some(Value::String(s)), "date") => json!(age(Some(&s), now)),
        (Some(v), _) => v,
        (None, _) => json!("<none>"),
    }
}

fn col(name: &str, kind: &str, format: &str) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": "", "priority": 0})
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|s| s["restartCount"].as_i64())
        .sum();
    let reason = statuses
        .iter()
        .find_map(|s| {
            s.pointer("/state/waiting/reason")
                .or(s.pointer("/state/terminated/reason"))
                .and_then(Value::as_str)
        })
        .or(o.pointer("/status/phase").and_then(Value::as_str))
        .unwrap_or("Unknown");
    vec![
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
    ]
}

/// The Table for `objects` of resource `info`.
pub fn to_table(
    info: &ResourceInfo,
    objects: &[Value],
    resource_version: &str,
    include_object: &str,
) -> Value {
    let now = Utc::now();
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    match info.gvr.plural {
        "namespaces" => columns.push(col("Status", "string", "")),
        "pods" => {
            for c in ["Ready", "Status", "Restarts"] {
                columns.push(col(c, "string", ""));
            }
        }
        _ => columns.extend(
            info.printer_columns
                .iter()
                .map(|c| col(&c.name, &c.kind, "")),
        ),
    }
    let extra = |o: &Value| -> Vec<Value> {
        match info.gvr.plural {
            "namespaces" => vec![o.pointer("/status/phase").cloned().unwrap_or(json!(""))],
            "pods" => pod_cells(o),
            _ => info
                .printer_columns
                .iter()
                .map(|c| cell(json_path(o, &c.json_path), &c.kind, now))
                .collect(),
        }
    };
    // Custom resources with additionalPrinterColumns show exactly those (after Name).
    let has_age = !info.resource.custom || info.printer_columns.is_empty();
    if has_age {
        columns.push(col("Age", "string", ""));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
            cells.extend(extra(o));
            if has_age {
                cells.push(json!(age(
                    o.pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str),
                    now
                )));
            }
            let mut row = json!({"cells": cells});
            match include_object {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_filters_conditions() {
        let o = json!({"status": {"conditions": [{"type": "Ready", "status": "x"}, {"type": "Succeeded", "status": "True", "reason": "Succeeded"}], "startTime": "2026-01-01T00:00:00Z"}});
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Succeeded\")].status"),
            Some(json!("True"))
        );
        assert_eq!(
            json_path(&o, ".status.startTime"),
            Some(json!("2026-01-01T00:00:00Z"))
        );
        assert_eq!(
            json_path(&o, ".status.conditions[0].type"),
            Some(json!("Ready"))
        );
        assert_eq!(json_path(&o, ".status.completionTime"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3600 * 5 + 60), "5h1m");
        assert_eq!(human_duration(86400 * 3), "3d0h");
    }
}
