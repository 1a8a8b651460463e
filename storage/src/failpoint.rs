//! Named points at which a test makes the server die as `kill -9` would, to
//! prove that an answer lost after a commit costs the client nothing (the
//! crash tests set `WALSTORE_FAILPOINTS`; see docs/reliability.md).
//!
//! The variable is read once. Unset, which is how the server always runs
//! outside those tests, a point costs one load of an initialised `OnceLock`.

use std::sync::OnceLock;

/// Environment variable naming the armed points, comma-separated.
pub const ENV: &str = "WALSTORE_FAILPOINTS";

/// Every point there is: the server refuses to start with another name in
/// [`ENV`], so a misspelt point cannot make a crash test pass by never firing.
pub const POINTS: &[&str] = &[
    // CompleteMultipartUpload committed, its answer not yet sent.
    "complete-after-commit",
    // A tier record committed, the evicted blob file not yet removed.
    "tier-evict-recorded",
];

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| parse(&std::env::var(ENV).unwrap_or_default()).unwrap_or_default())
}

fn parse(v: &str) -> std::result::Result<Vec<String>, String> {
    let names: Vec<String> = v.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
    match names.iter().find(|n| !POINTS.contains(&n.as_str())) {
        Some(bad) => Err(format!("{ENV}: unknown failpoint {bad:?} (known: {})", POINTS.join(", "))),
        None => Ok(names),
    }
}

/// Checks [`ENV`] at start-up: an unknown name is an error; armed points are logged.
pub fn validate_env() -> std::result::Result<(), String> {
    let names = parse(&std::env::var(ENV).unwrap_or_default())?;
    if !names.is_empty() {
        tracing::warn!(points = ?names, "failpoints armed: the server will kill itself there (tests only)");
    }
    Ok(())
}

/// Dies with SIGKILL if `name` is armed: no destructor, flush or answer runs.
pub(crate) fn hit(name: &'static str) {
    debug_assert!(POINTS.contains(&name), "undeclared failpoint {name}");
    if armed().iter().any(|n| n == name) {
        tracing::warn!(point = name, "failpoint reached: killing the process");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn unknown_points_are_refused() {
        assert_eq!(parse("").expect("empty"), Vec::<String>::new());
        assert_eq!(parse(" complete-after-commit ,").expect("one point"), vec!["complete-after-commit"]);
        let e = parse("complete-after-comit").expect_err("a typo");
        assert!(e.contains("unknown failpoint \"complete-after-comit\""), "{e}");
    }
}
