//! Tekton variable substitution: `$(params.x)`, `$(tasks.t.results.r)`, `$(context.…)`.

use std::collections::BTreeMap;

use serde_json::Value;

/// Replace every `$(expr)` in `s` for which `lookup(expr)` answers; others stay as written
/// (Tekton leaves unknown variables alone too).
pub fn replace_vars(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) => {
                let expr = after[..end].trim();
                match lookup(expr) {
                    Some(v) => {
                        out.push_str(&v);
                        rest = &after[end + 1..];
                    }
                    // Not a variable (e.g. a shell's `$(cat $(params.f))`): keep
                    // it and look for variables inside it.
                    None => {
                        out.push_str("$(");
                        rest = after;
                    }
                }
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Apply [`replace_vars`] to every string inside `v`.
pub fn replace_in_value(v: &mut Value, lookup: &dyn Fn(&str) -> Option<String>) {
    match v {
        Value::String(s) if s.contains("$(") => *s = replace_vars(s, lookup),
        Value::Array(items) => items.iter_mut().for_each(|i| replace_in_value(i, lookup)),
        Value::Object(map) => map.values_mut().for_each(|i| replace_in_value(i, lookup)),
        _ => {}
    }
}

/// The parameter named by `expr` if it is a parameter reference:
/// `params.x`, `params["x"]`, `params['x']`, `inputs.params.x` (legacy), `params.x[*]`.
pub fn param_name(expr: &str) -> Option<&str> {
    let rest = expr
        .strip_prefix("params")
        .or_else(|| expr.strip_prefix("inputs.params"))?;
    let name = if let Some(n) = rest.strip_prefix('.') {
        n.strip_suffix("[*]").unwrap_or(n)
    } else {
        let inner = rest.strip_prefix('[')?.strip_suffix(']')?;
        inner.trim_matches(|c| c == '"' || c == '\'')
    };
    (!name.is_empty()).then_some(name)
}

/// `(task, result)` when `expr` is `tasks.<task>.results.<result>` (optionally with a key/index).
pub fn result_ref(expr: &str) -> Option<(&str, &str)> {
    let rest = expr.strip_prefix("tasks.")?;
    let (task, rest) = rest.split_once('.')?;
    let result = rest.strip_prefix("results.")?;
    let result = result.split(['.', '[']).next()?;
    (!task.is_empty() && !result.is_empty()).then_some((task, result))
}

/// Every `$(tasks.X.results.Y)` reference inside `v`, as `(X, Y)`.
pub fn result_refs(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    collect_refs(v, &mut out);
    out
}

fn collect_refs(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("$(") {
                let after = &rest[start + 2..];
                let Some(end) = after.find(')') else { break };
                if let Some((t, r)) = result_ref(after[..end].trim()) {
                    out.push((t.to_string(), r.to_string()));
                }
                rest = &after[end + 1..];
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, out)),
        Value::Object(map) => map.values().for_each(|i| collect_refs(i, out)),
        _ => {}
    }
}

/// Expand each `args`/`command` item of the steps that is exactly an array
/// parameter reference (`$(params.x[*])`) into that array's items, as Tekton
/// does: an empty array leaves no argument, each item stays one argument.
pub fn expand_array_params(task_spec: &mut Value, arrays: &BTreeMap<String, Vec<String>>) {
    let Some(steps) = task_spec.get_mut("steps").and_then(Value::as_array_mut) else {
        return;
    };
    for step in steps {
        for key in ["args", "command"] {
            let Some(items) = step.get_mut(key).and_then(Value::as_array_mut) else {
                continue;
            };
            let expanded: Vec<Value> = items
                .iter()
                .flat_map(|item| match array_ref(item, arrays) {
                    Some(values) => values.iter().map(|v| Value::String(v.clone())).collect(),
                    None => vec![item.clone()],
                })
                .collect();
            *items = expanded;
        }
    }
}

fn array_ref<'a>(
    item: &Value,
    arrays: &'a BTreeMap<String, Vec<String>>,
) -> Option<&'a Vec<String>> {
    let expr = item.as_str()?.strip_prefix("$(")?.strip_suffix(')')?.trim();
    let name = param_name(expr.strip_suffix("[*]")?)?;
    arrays.get(name)
}

/// A lookup for parameter references from a name→value map.
pub fn params_lookup(params: &BTreeMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
    move |expr| param_name(expr).and_then(|n| params.get(n).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replaces_known_variables_only() {
        let params: BTreeMap<String, String> = [("x".to_string(), "1".to_string())].into();
        let f = params_lookup(&params);
        assert_eq!(
            replace_vars("a $(params.x) $(params.y) $(params['x'])", &f),
            "a 1 $(params.y) 1"
        );
        assert_eq!(
            replace_vars("$(inputs.params.x)+$(params[\"x\"])", &f),
            "1+1"
        );
        assert_eq!(
            replace_vars("$(cat $(params.x)/f) $(y $(z)", &f),
            "$(cat 1/f) $(y $(z)"
        );
        assert_eq!(
            replace_vars("unterminated $(params.x", &f),
            "unterminated $(params.x"
        );
    }

    #[test]
    fn array_params_expand_to_one_argument_per_item() {
        let arrays: BTreeMap<String, Vec<String>> = [
            ("A".to_string(), vec!["x y".to_string(), "z".to_string()]),
            ("E".to_string(), vec![]),
        ]
        .into();
        let mut spec =
            json!({"steps": [{"args": ["$(params.A[*])", "--", "$(params.E[*])", "$(params.A)"]}]});
        expand_array_params(&mut spec, &arrays);
        assert_eq!(
            spec["steps"][0]["args"],
            json!(["x y", "z", "--", "$(params.A)"])
        );
    }

    #[test]
    fn finds_result_references() {
        let v = json!({"a": ["$(tasks.build.results.IMAGE_DIGEST)-$(tasks.c.results.sum)"], "b": "$(params.x)"});
        assert_eq!(
            result_refs(&v),
            vec![
                ("build".to_string(), "IMAGE_DIGEST".to_string()),
                ("c".to_string(), "sum".to_string())
            ]
        );
    }
}
