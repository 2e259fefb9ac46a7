//! Log lines as PostgreSQL `text` can hold them, whatever bytes a tool
//! printed: invalid UTF-8 decoded lossily, NUL replaced, and a visible mark
//! when anything was replaced (so a reader knows the line is not verbatim).

use std::borrow::Cow;

/// Appended to a log line some of whose bytes were not text (invalid UTF-8,
/// or NUL, which PostgreSQL `text` cannot hold): each shows as U+FFFD.
pub const REPLACED_MARK: &str = " [non-text bytes shown as \u{FFFD}]";

/// A log line from raw bytes: invalid UTF-8 decoded lossily, NUL replaced,
/// and [`REPLACED_MARK`] appended when anything was replaced.
pub fn log_text_from_bytes(bytes: &[u8]) -> Cow<'_, str> {
    match String::from_utf8_lossy(bytes) {
        Cow::Borrowed(text) => log_text(text),
        Cow::Owned(mut text) => {
            if text.contains('\0') {
                text = text.replace('\0', "\u{FFFD}");
            }
            text.push_str(REPLACED_MARK);
            Cow::Owned(text)
        }
    }
}

/// `text` as PostgreSQL can store it: NUL replaced by U+FFFD and
/// [`REPLACED_MARK`] appended; unchanged (borrowed) when there is none.
pub fn log_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}") + REPLACED_MARK)
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_are_kept_as_they_are() {
        assert!(matches!(log_text("plain é ✓"), Cow::Borrowed("plain é ✓")));
        assert!(matches!(
            log_text_from_bytes("ok".as_bytes()),
            Cow::Borrowed("ok")
        ));
        // A genuine U+FFFD in the output is not a replacement.
        assert_eq!(log_text("\u{FFFD}"), "\u{FFFD}");
    }

    #[test]
    fn nul_and_invalid_utf8_are_replaced_and_marked() {
        assert_eq!(
            log_text("a\0b\0"),
            format!("a\u{FFFD}b\u{FFFD}{REPLACED_MARK}")
        );
        assert_eq!(
            log_text_from_bytes(b"x\xff\xfey"),
            format!("x\u{FFFD}\u{FFFD}y{REPLACED_MARK}")
        );
        assert_eq!(
            log_text_from_bytes(b"\0\xc3"),
            format!("\u{FFFD}\u{FFFD}{REPLACED_MARK}")
        );
        // Marked once, however often it passes through.
        let once = log_text_from_bytes(b"\0").into_owned();
        assert_eq!(log_text(&once), once);
    }
}
