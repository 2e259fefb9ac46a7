//! The task graph of a Pipeline: `runAfter` plus the implicit edges from result references.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{model, subst};

/// Pipeline task name → names of the tasks it waits for.
pub type Deps = BTreeMap<String, BTreeSet<String>>;

/// Dependencies of one pipeline task: `runAfter`, and every task whose results its
/// params or `when` expressions reference.
pub fn task_deps(task: &Value) -> BTreeSet<String> {
    let mut deps: BTreeSet<String> = model::arr(task, &["runAfter"])
        .iter()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect();
    for key in ["params", "when", "matrix"] {
        if let Some(v) = task.get(key) {
            deps.extend(subst::result_refs(v).into_iter().map(|(t, _)| t));
        }
    }
    deps
}

/// Build the graph of `tasks`, rejecting unknown dependencies and cycles with Tekton's wording.
pub fn build(tasks: &[Value]) -> Result<Deps, String> {
    let names: BTreeSet<&str> = tasks
        .iter()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .collect();
    let mut deps = Deps::new();
    for t in tasks {
        let name = model::str_at(t, &["name"]).unwrap_or("");
        let d = task_deps(t);
        for dep in &d {
            if !names.contains(dep.as_str()) {
                return Err(format!(
                    "couldn't add link between {name} and {dep}: task {name} depends on {dep} but {dep} wasn't present in Pipeline"
                ));
            }
        }
        deps.insert(name.to_string(), d);
    }
    // Depth-first search for a cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(n: &str, deps: &Deps, marks: &mut BTreeMap<String, Mark>) -> Result<(), String> {
        marks.insert(n.to_string(), Mark::Visiting);
        for d in deps.get(n).into_iter().flatten() {
            match marks.get(d.as_str()) {
                Some(Mark::Visiting) => {
                    return Err(format!("cycle detected; task \"{n}\" depends on \"{d}\""));
                }
                Some(Mark::Done) => {}
                None => visit(d, deps, marks)?,
            }
        }
        marks.insert(n.to_string(), Mark::Done);
        Ok(())
    }
    let mut marks = BTreeMap::new();
    for n in deps.keys() {
        if !marks.contains_key(n.as_str()) {
            visit(n, &deps, &mut marks)?;
        }
    }
    Ok(deps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_references_are_edges() {
        let tasks = vec![
            json!({"name": "a"}),
            json!({"name": "b", "params": [{"name": "x", "value": "$(tasks.a.results.sum)"}]}),
            json!({"name": "c", "runAfter": ["b"]}),
        ];
        let d = build(&tasks).unwrap();
        assert_eq!(d["b"], BTreeSet::from(["a".to_string()]));
        assert_eq!(d["c"], BTreeSet::from(["b".to_string()]));
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let err = build(&[json!({"name": "a", "runAfter": ["a"]})]).unwrap_err();
        assert_eq!(err, "cycle detected; task \"a\" depends on \"a\"");
    }
}
