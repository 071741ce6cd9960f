//! Incident capture: log filtering and alert delivery.

pub mod egress;
pub mod filter;
pub mod level;
pub mod tail;
pub mod webhook;
