//! Validation of the URL a short link points to.

use url::Url;

use crate::error::AppError;

/// Browsers and proxies commonly cap URLs near 2 KiB; longer ones are almost always abuse.
pub const MAX_URL_LEN: usize = 2048;

/// Accepts absolute http(s) URLs with a host and without credentials, and returns the
/// normalised form (punycode host, percent-encoded path) which is always a valid `Location`.
pub fn validate(raw: &str) -> Result<String, AppError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(AppError::InvalidUrl("url must not be empty".to_owned()));
    }
    if raw.len() > MAX_URL_LEN {
        return Err(AppError::UrlTooLong { max: MAX_URL_LEN });
    }
    let url = Url::parse(raw)
        .map_err(|e| AppError::InvalidUrl(format!("url is not a valid absolute URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(AppError::InvalidUrl(format!(
            "url scheme must be http or https, got {:?}",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(AppError::InvalidUrl("url must have a host".to_owned()));
    }
    // Credentials in a short link's target are a phishing pattern ("https://bank.com@evil").
    if !url.username().is_empty() || url.password().is_some() {
        return Err(AppError::InvalidUrl(
            "url must not contain credentials".to_owned(),
        ));
    }
    let normalised = String::from(url);
    if normalised.len() > MAX_URL_LEN {
        return Err(AppError::UrlTooLong { max: MAX_URL_LEN });
    }
    Ok(normalised)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_https_and_normalises() {
        assert_eq!(
            validate("https://example.com/a?b=c").unwrap(),
            "https://example.com/a?b=c"
        );
        assert_eq!(
            validate(" HTTP://Example.COM ").unwrap(),
            "http://example.com/"
        );
        assert_eq!(
            validate("https://bücher.de/ä").unwrap(),
            "https://xn--bcher-kva.de/%C3%A4"
        );
    }

    #[test]
    fn rejects_what_is_not_a_web_url() {
        let cases = [
            ("", "invalid_url"),
            ("example.com", "invalid_url"),
            ("/relative/path", "invalid_url"),
            ("ftp://example.com/file", "invalid_url"),
            ("javascript:alert(1)", "invalid_url"),
            ("mailto:a@example.com", "invalid_url"),
            ("http://", "invalid_url"),
            ("https://user:pw@example.com/", "invalid_url"),
            ("http://exa mple.com", "invalid_url"),
        ];
        for (input, code) in cases {
            let err = validate(input).unwrap_err();
            assert_eq!(err.code(), code, "{input:?}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(validate(&long).unwrap_err().code(), "url_too_long");
    }
}
