//! Authentication (bearer tokens, client certificates) and a small RBAC-like
//! authorizer: each user has rules of namespaces × verbs × resources.

use std::collections::HashMap;
use std::sync::RwLock;

/// One permission rule; `"*"` matches anything. Resources are plurals,
/// optionally with a subresource (`pods/log`), optionally group-qualified
/// (`pipelineruns.tekton.dev`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub namespaces: Vec<String>,
    pub verbs: Vec<String>,
    pub resources: Vec<String>,
}

impl Rule {
    pub fn new(namespaces: &[&str], verbs: &[&str], resources: &[&str]) -> Self {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
        Self {
            namespaces: v(namespaces),
            verbs: v(verbs),
            resources: v(resources),
        }
    }

    /// Everything everywhere.
    pub fn all() -> Self {
        Self::new(&["*"], &["*"], &["*"])
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// What a request wants to do, for authorization.
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub plural: &'a str,
    pub subresource: Option<&'a str>,
    /// `None` for cluster-scoped requests (and all-namespace lists).
    pub namespace: Option<&'a str>,
}

#[derive(Default)]
pub struct Authenticator {
    tokens: RwLock<HashMap<String, User>>,
    rules: RwLock<HashMap<String, Vec<Rule>>>,
}

pub const ADMIN_USER: &str = "kube-sim:admin";
pub const ADMIN_GROUP: &str = "system:masters";

impl Authenticator {
    pub fn add_token(&self, token: &str, user: User) {
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_string(), user);
    }

    pub fn user_for_token(&self, token: &str) -> Option<User> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    pub fn set_rules(&self, user: &str, rules: Vec<Rule>) {
        self.rules
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user.to_string(), rules);
    }

    pub fn allowed(&self, user: &User, a: &Attributes<'_>) -> bool {
        if user.groups.iter().any(|g| g == ADMIN_GROUP) {
            return true;
        }
        let rules = self.rules.read().unwrap_or_else(|p| p.into_inner());
        let Some(rules) = rules.get(&user.name) else {
            return false;
        };
        let resource = match a.subresource {
            Some(s) => format!("{}/{s}", a.plural),
            None => a.plural.to_string(),
        };
        let qualified = if a.group.is_empty() {
            resource.clone()
        } else {
            format!("{}.{}", a.plural, a.group)
        };
        rules.iter().any(|r| {
            let ns_ok = r
                .namespaces
                .iter()
                .any(|n| n == "*" || Some(n.as_str()) == a.namespace);
            let verb_ok = r.verbs.iter().any(|v| v == "*" || v == a.verb);
            let res_ok = r
                .resources
                .iter()
                .any(|x| x == "*" || *x == resource || *x == qualified);
            ns_ok && verb_ok && res_ok
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_namespace_verb_resource() {
        let a = Authenticator::default();
        let u = User {
            name: "u".into(),
            groups: vec![],
        };
        a.set_rules(
            "u",
            vec![Rule::new(
                &["ci"],
                &["get", "list"],
                &["pipelineruns", "pods/log"],
            )],
        );
        let at = |verb, plural, sub, ns| Attributes {
            verb,
            group: "tekton.dev",
            plural,
            subresource: sub,
            namespace: ns,
        };
        assert!(a.allowed(&u, &at("get", "pipelineruns", None, Some("ci"))));
        assert!(!a.allowed(&u, &at("create", "pipelineruns", None, Some("ci"))));
        assert!(!a.allowed(&u, &at("get", "pipelineruns", None, Some("other"))));
        assert!(!a.allowed(&u, &at("get", "pipelineruns", None, None)));
        assert!(a.allowed(&u, &at("get", "pods", Some("log"), Some("ci"))));
        let admin = User {
            name: "x".into(),
            groups: vec![ADMIN_GROUP.into()],
        };
        assert!(a.allowed(&admin, &at("delete", "anything", None, None)));
    }
}
