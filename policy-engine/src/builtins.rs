//! Process-wide pieces every policy kind shares: the size limit of any compiled regex, and
//! the cache that builds a built-in catalogue once per process.

use std::sync::OnceLock;

/// Compiled size limit for any single regex (user patterns included).
pub const REGEX_SIZE_LIMIT: usize = 16 * 1024 * 1024;

/// Builds a value of the built-in catalogues once per process: reloads and every compile
/// after the first reuse it (compiled regexes are cheap to clone).
pub(crate) fn builtin<T: Clone>(
    cell: &'static OnceLock<Result<T, String>>,
    build: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    cell.get_or_init(build).clone()
}
