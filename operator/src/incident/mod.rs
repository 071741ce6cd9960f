//! Incidents: the pure log filter and webhook payload, and the I/O that captures a
//! failure's logs into a ConfigMap and posts the alert.

pub mod capture;
pub mod excerpt;
pub mod filter;
pub mod webhook;
