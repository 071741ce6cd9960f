//! The API contract: what users, the kubectl plugin, the chart and dashboards rely on. The
//! custom resource's spec and status, the budget in its status, the reasons it reports and
//! the annotations it reads. Depends on nothing else in the crate; the logic on these types
//! lives in `impl` blocks beside the code that uses it (e.g. `crate::budget`).

pub mod annotations;
pub mod budget;
mod promql;
pub mod reason;
mod spec;
mod status;
mod template;

pub use promql::*;
pub use reason::FailureReason;
pub use spec::*;
pub use status::*;
pub use template::*;
