//! Helpers shared by the store's source-scanning tests.

/// Lowercase, with every run of whitespace (and Rust's `\` line
/// continuations) collapsed to one space, so statements read the same
/// however they are wrapped.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut gap = false;
    for c in text.chars() {
        if c.is_whitespace() || c == '\\' {
            gap = true;
            continue;
        }
        if gap && !out.is_empty() {
            out.push(' ');
        }
        gap = false;
        out.extend(c.to_lowercase());
    }
    out
}
