//! JSON form of fault rules for the `/kube-sim/faults` admin endpoint:
//! `{"verb": "create", "resource": "pipelineruns", "times": 2, "error": 429, "retryAfter": 3}`,
//! `"errorAfterActing": 500` (the request is carried out, then answered 500),
//! or `"latencyMs": 200`, `"dropWatchAfterMs": 500`, `"expireWatch": true`;
//! `"probability": 0.1` hits each matching request with that chance.

use crate::faults::{FaultAction, FaultRule};
use serde_json::{Value, json};
use std::time::Duration;

pub fn rule_from_json(v: &Value) -> Result<FaultRule, String> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    let action = if let Some(code) = n("error") {
        if !(400..600).contains(&code) {
            return Err(format!("error: {code} is not an HTTP error code (400-599)"));
        }
        FaultAction::Error {
            code: code as u16,
            retry_after: n("retryAfter").map(|r| r as u32),
        }
    } else if let Some(code) = n("errorAfterActing") {
        if !(400..600).contains(&code) {
            return Err(format!(
                "errorAfterActing: {code} is not an HTTP error code (400-599)"
            ));
        }
        FaultAction::ErrorAfterActing { code: code as u16 }
    } else if let Some(ms) = n("latencyMs") {
        FaultAction::Latency(Duration::from_millis(ms))
    } else if let Some(ms) = n("dropWatchAfterMs") {
        FaultAction::DropWatch {
            after: Duration::from_millis(ms),
        }
    } else if v.get("expireWatch") == Some(&json!(true)) {
        FaultAction::ExpireWatch
    } else {
        return Err(
            "a fault needs one of: error, errorAfterActing, latencyMs, dropWatchAfterMs, expireWatch".to_string(),
        );
    };
    let probability = match v.get("probability") {
        None | Some(Value::Null) => None,
        Some(p) => match p.as_f64() {
            Some(p) if (0.0..=1.0).contains(&p) => Some(p),
            _ => return Err(format!("probability: {p} is not a number from 0 to 1")),
        },
    };
    Ok(FaultRule {
        verb: s("verb"),
        resource: s("resource"),
        action,
        times: n("times").map(|t| t as u32),
        probability,
    })
}

pub fn rule_to_json(id: u64, r: &FaultRule) -> Value {
    let mut v = json!({"id": id, "verb": r.verb, "resource": r.resource, "times": r.times,
                       "probability": r.probability});
    match &r.action {
        FaultAction::Error { code, retry_after } => {
            v["error"] = json!(code);
            v["retryAfter"] = json!(retry_after);
        }
        FaultAction::ErrorAfterActing { code } => v["errorAfterActing"] = json!(code),
        FaultAction::Latency(d) => v["latencyMs"] = json!(d.as_millis() as u64),
        FaultAction::DropWatch { after } => v["dropWatchAfterMs"] = json!(after.as_millis() as u64),
        FaultAction::ExpireWatch => v["expireWatch"] = json!(true),
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let r =
            rule_from_json(&json!({"verb": "create", "error": 429, "retryAfter": 3, "times": 1}))
                .unwrap();
        assert_eq!(
            r.action,
            FaultAction::Error {
                code: 429,
                retry_after: Some(3)
            }
        );
        assert_eq!(rule_from_json(&rule_to_json(1, &r)).unwrap(), r);
        assert!(rule_from_json(&json!({"verb": "get"})).is_err());
        let r = rule_from_json(&json!({"error": 500, "probability": 0.25})).unwrap();
        assert_eq!(r.probability, Some(0.25));
        assert_eq!(rule_from_json(&rule_to_json(2, &r)).unwrap(), r);
        for bad in [json!(1.5), json!(-0.1), json!("0.5")] {
            let e = rule_from_json(&json!({"error": 500, "probability": bad})).unwrap_err();
            assert!(e.starts_with("probability: "), "{e}");
        }
        assert!(rule_from_json(&json!({"error": 200})).is_err());
        let r = rule_from_json(&json!({"verb": "create", "errorAfterActing": 500})).unwrap();
        assert_eq!(r.action, FaultAction::ErrorAfterActing { code: 500 });
        assert_eq!(rule_from_json(&rule_to_json(3, &r)).unwrap(), r);
        assert!(rule_from_json(&json!({"errorAfterActing": 200})).is_err());
    }
}
