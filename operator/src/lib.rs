//! The ShortenerRelease operator: CRD types, pure rollout decisions and the layer that applies them.
// Tests may unwrap; the crate's own code may not (workspace lint).
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod api_token;
pub mod apply;
pub mod backoff;
pub mod budget;
pub mod cli;
pub mod context;
pub mod controller;
pub mod crash;
pub mod error;
pub mod gate;
pub mod incident;
pub mod leader;
pub mod manual;
pub mod metrics;
pub mod observe;
pub mod podtemplate;
pub mod probes;
pub mod promql;
pub mod reconcile;
pub mod resources;
pub mod rollout;
