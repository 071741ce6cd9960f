//! Slugs: the path segment of a short URL.

use rand::Rng;
use rand::distr::Alphanumeric;

use crate::error::AppError;

/// 62^7 ≈ 3.5e12 possible slugs: collisions stay rare for any store this service will hold,
/// and the rare one is retried.
pub const GENERATED_LEN: usize = 7;
pub const MIN_LEN: usize = 3;
pub const MAX_LEN: usize = 64;

/// Paths the service serves itself (or may soon); a slug equal to one would be unreachable.
const RESERVED: &[&str] = &[
    "api",
    "healthz",
    "readyz",
    "metrics",
    "livez",
    "static",
    "favicon.ico",
];

pub fn generate() -> String {
    loop {
        let slug: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(GENERATED_LEN)
            .map(char::from)
            .collect();
        if !is_reserved(&slug) {
            return slug;
        }
    }
}

fn is_reserved(slug: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(slug))
}

/// Checks a client-chosen slug: `[A-Za-z0-9_-]{3,64}`, not a reserved word.
pub fn validate_custom(slug: &str) -> Result<(), AppError> {
    let len = slug.chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&len) {
        return Err(AppError::InvalidSlug(format!(
            "slug must be {MIN_LEN} to {MAX_LEN} characters long, got {len}"
        )));
    }
    if let Some(bad) = slug
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(AppError::InvalidSlug(format!(
            "slug may contain only A-Z, a-z, 0-9, '-' and '_', found {bad:?}"
        )));
    }
    if is_reserved(slug) {
        return Err(AppError::ReservedSlug(slug.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_slugs_are_fixed_length_url_safe_and_valid_custom_slugs() {
        for _ in 0..1000 {
            let s = generate();
            assert_eq!(s.len(), GENERATED_LEN);
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
            validate_custom(&s).unwrap();
        }
    }

    #[test]
    fn custom_slug_rules() {
        for ok in ["abc", "my-link_2", &"x".repeat(MAX_LEN)] {
            assert!(validate_custom(ok).is_ok(), "{ok}");
        }
        let cases: &[(&str, &str)] = &[
            ("ab", "invalid_slug"),
            (&"x".repeat(MAX_LEN + 1), "invalid_slug"),
            ("has space", "invalid_slug"),
            ("slash/y", "invalid_slug"),
            ("dot.s", "invalid_slug"),
            ("ümlaut", "invalid_slug"),
            ("api", "reserved_slug"),
            ("Metrics", "reserved_slug"),
            ("healthz", "reserved_slug"),
            ("readyz", "reserved_slug"),
        ];
        for (bad, code) in cases {
            let err = validate_custom(bad).unwrap_err();
            assert_eq!(err.code(), *code, "{bad}");
        }
    }
}
