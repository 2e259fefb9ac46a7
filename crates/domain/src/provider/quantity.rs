//! A Kubernetes resource quantity for sizes (`workspace_size`): checked here
//! so a bad value is a 422 at the API, not a PVC the cluster refuses later.

use std::fmt;

/// Suffixes of the Kubernetes quantity grammar that make sense for a size:
/// binary (`Ki`..`Ei`) and decimal (`k`..`E`). Milli (`m`) and exponents
/// are left out: no storage size is written that way.
const SUFFIXES: &[&str] = &[
    "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E", "",
];

/// A positive size such as `1Gi`, `500Mi` or `2.5G`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity(String);

impl Quantity {
    pub fn parse(input: &str) -> Result<Self, String> {
        const WHY: &str = "must be a Kubernetes quantity: a positive number with an optional unit (e.g. 1Gi, 500Mi, 10G)";
        if input.len() > 32 {
            return Err("must be at most 32 characters".into());
        }
        // Two-letter suffixes first, so `Mi` is not read as `M` + junk.
        let Some(number) = SUFFIXES.iter().find_map(|s| input.strip_suffix(s)) else {
            return Err(WHY.into());
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        let well_formed = !whole.is_empty()
            && digits(whole)
            && digits(fraction)
            && (!number.contains('.') || !fraction.is_empty());
        let positive = number.bytes().any(|b| (b'1'..=b'9').contains(&b));
        if well_formed && positive {
            Ok(Self(input.to_owned()))
        } else {
            Err(WHY.into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
