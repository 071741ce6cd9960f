//! Incidents: the pure log filter and webhook payload, and the I/O that captures a
//! failure's logs into a ConfigMap and posts the alert.

pub mod capture;
pub mod egress;
pub mod excerpt;
pub mod filter;
pub mod level;
pub mod tail;
pub mod webhook;
