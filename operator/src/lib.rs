//! The ShortenerRelease operator: CRD types, pure rollout decisions and the layer that applies them.

pub mod budget;
pub mod incident;
