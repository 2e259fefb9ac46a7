//! The client's exit codes (README "Command-line client"). A followed build
//! exits with its result; everything else is 0 or an error code.

use std::process::ExitCode;

/// The build succeeded, or the command did what it was asked.
pub const OK: u8 = 0;
/// The followed build failed.
pub const BUILD_FAILED: u8 = 1;
/// Bad usage: an unknown flag, a malformed value, no server URL or token
/// (clap uses 2 for its own usage errors as well).
pub const USAGE: u8 = 2;
/// The followed build was cancelled.
pub const BUILD_CANCELLED: u8 = 3;
/// The followed build timed out.
pub const BUILD_TIMED_OUT: u8 = 4;
/// The server refused the request (its problem `detail` is shown).
pub const API_ERROR: u8 = 5;
/// The server could not be reached (or stayed away longer than the
/// reconnect window while following), or a local file could not be used.
pub const UNAVAILABLE: u8 = 6;

/// The exit code for a build that ended with `status`.
pub fn for_build_status(status: &str) -> u8 {
    match status {
        "succeeded" => OK,
        "cancelled" => BUILD_CANCELLED,
        "timed_out" => BUILD_TIMED_OUT,
        _ => BUILD_FAILED,
    }
}

pub fn code(code: u8) -> ExitCode {
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_has_its_own_code() {
        let codes = [
            for_build_status("succeeded"),
            for_build_status("failed"),
            for_build_status("cancelled"),
            for_build_status("timed_out"),
            USAGE,
            API_ERROR,
            UNAVAILABLE,
        ];
        assert_eq!(
            codes[..4],
            [OK, BUILD_FAILED, BUILD_CANCELLED, BUILD_TIMED_OUT]
        );
        let mut unique = codes.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), codes.len(), "{codes:?}");
    }
}
