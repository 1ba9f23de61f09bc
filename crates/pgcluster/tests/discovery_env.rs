//! `find_pg_bindir` with `MANA_AI_PG_BINDIR` pointing nowhere (own binary: it sets the
//! process environment).

use mana_ai_pgcluster::{find_pg_bindir, ClusterError, BINDIR_ENV};

#[test]
fn bindir_env_pointing_nowhere_names_the_variable_and_path() {
    std::env::set_var(BINDIR_ENV, "/nonexistent/pg/bin");
    let err = find_pg_bindir().unwrap_err();
    std::env::remove_var(BINDIR_ENV);
    let text = err.to_string();
    assert!(
        matches!(err, ClusterError::BindirEnvInvalid { .. }),
        "{text}"
    );
    assert!(text.contains("MANA_AI_PG_BINDIR"), "{text}");
    assert!(text.contains("/nonexistent/pg/bin"), "{text}");
    // Without the variable the real installation is found again.
    assert!(find_pg_bindir().unwrap().join("initdb").exists());
}
