//! Compiled glob sets, shared by every layer of one process.
//!
//! The profile's deny globs (some seventy) were compiled into a `GlobSet` by the Landlock
//! omission search, the supervisor's socket mediation and the event mapper, each time a regex
//! set with its DFAs: about a tenth of an unprivileged start-up. Every layer reads them the
//! same way (`*` stays within one path component, `\` escapes), so one compiled set per
//! pattern list serves all of them.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// The set of `patterns`, compiled once per process. An invalid pattern is an error naming
/// it (callers that skip invalid patterns filter them first with [`glob`]).
pub(crate) fn glob_set(patterns: &[String]) -> Result<GlobSet, globset::Error> {
    static CACHE: OnceLock<Mutex<HashMap<Vec<String>, GlobSet>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(set) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(patterns)
    {
        return Ok(set.clone());
    }
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(glob(pattern)?);
    }
    let started = std::time::Instant::now();
    let set = builder.build()?;
    tracing::debug!(patterns = patterns.len(), elapsed = ?started.elapsed(), "glob set compiled");
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(patterns.to_vec(), set.clone());
    Ok(set)
}

/// One pattern as every layer reads it.
pub(crate) fn glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_compiled_set_per_pattern_list_read_within_components() {
        let patterns = vec!["**/.env".to_string(), "/home/u/.ssh/*".to_string()];
        let set = glob_set(&patterns).unwrap();
        assert!(set.is_match("/w/a/.env"));
        assert!(set.is_match("/home/u/.ssh/id_rsa"));
        assert!(
            !set.is_match("/home/u/.ssh/keys/id_rsa"),
            "* within one component"
        );
        assert_eq!(glob_set(&patterns).unwrap().len(), 2);
        let bad = vec!["a[".to_string()];
        assert!(glob_set(&bad).is_err());
    }
}
