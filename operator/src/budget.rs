//! SLA downtime budget over a rolling year.
