//! Incident capture: log filtering and alert delivery.
