//! Test-only crash points for the chaos e2e suite (`operator/tests/chaos/`): with
//! `OPERATOR_TEST_CRASH_AT=<point>` the process aborts the first time it reaches that
//! point, so a test can kill the operator in a window too narrow to hit from outside
//! (between the Service switch and the status write, say) and check what a restart makes
//! of it.
//!
//! Compiled into debug builds only (the e2e tests run those); release builds, and so every
//! image, ignore the variable.

/// The variable naming the crash point.
pub const ENV: &str = "OPERATOR_TEST_CRASH_AT";

/// During a smoke test, after the first pod passed it (a URL was written).
pub const SMOKE_TEST: &str = "smoke-test";
/// A promotion: the active Service selects the new revision, the status does not say so yet.
pub const AFTER_PROMOTION_SWITCH: &str = "after-service-switch";
/// A rollback: the active Service is back on the stable revision, the incident and the
/// status are not written yet.
pub const AFTER_ROLLBACK_SWITCH: &str = "rollback-after-service-switch";
/// A rollback: the status is written, the failed revision is not scaled down yet.
pub const AFTER_ROLLBACK_STATUS: &str = "rollback-after-status";

/// Aborts the process (no destructors, no Lease hand-over: as a SIGKILL) if `name` is the
/// configured crash point. A no-op in release builds.
pub fn point(name: &str) {
    if cfg!(debug_assertions) && std::env::var(ENV).is_ok_and(|v| v == name) {
        tracing::error!(point = name, "{ENV}: aborting at this point (test hook)");
        std::process::abort();
    }
}
