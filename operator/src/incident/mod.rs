//! Incident capture: log filtering and alert delivery.

pub mod filter;
pub mod webhook;
