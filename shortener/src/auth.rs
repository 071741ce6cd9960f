//! Who may write: creates and deletes need `Authorization: Bearer <token>` with one of the
//! configured tokens, and each client IP gets a bounded rate of writes. Redirects and reads
//! stay public.
//!
//! Tokens are compared in constant time, each one against every configured token, so the
//! answer's timing says nothing about how much of a guess was right. They are never logged.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::config::ApiToken;
use crate::error::AppError;

/// Shorter tokens are too easy to guess; the operator's are 64 hex digits.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longer than any real token; bounds the work per comparison.
pub const MAX_TOKEN_LEN: usize = 512;
/// How often the rate limiter forgets clients that are back to a full burst, so its memory
/// is bounded by the clients of the last moments, not of the process's life.
const LIMITER_SWEEP: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "no API token: set SHORTENER_API_TOKENS (or SHORTENER_API_TOKENS_FILE), or pass --allow-anonymous-writes (SHORTENER_ALLOW_ANONYMOUS_WRITES=true) to run without authentication"
    )]
    None,
    #[error(
        "API token #{index} {problem} (tokens are {MIN_TOKEN_LEN}-{MAX_TOKEN_LEN} visible ASCII characters)"
    )]
    Invalid { index: usize, problem: &'static str },
    #[error("cannot read SHORTENER_API_TOKENS_FILE {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

/// The accepted tokens; empty means writes are open (`--allow-anonymous-writes`).
#[derive(Clone, Default)]
pub struct Tokens(Arc<[Vec<u8>]>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// Collects the tokens from every source. With none and no explicit opt-out, the process
    /// must not start: an open write API is never a default.
    pub fn new(
        listed: &[ApiToken],
        file: Option<&Path>,
        operator: Option<&ApiToken>,
        allow_anonymous: bool,
    ) -> Result<Self, TokenError> {
        let mut all: Vec<String> = listed.iter().map(|t| t.0.trim().to_owned()).collect();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| TokenError::File {
                path: path.display().to_string(),
                source,
            })?;
            all.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        all.extend(operator.map(|t| t.0.trim().to_owned()));
        // `SHORTENER_API_TOKENS=""` or a trailing comma is not a token.
        all.retain(|t| !t.is_empty());
        for (i, t) in all.iter().enumerate() {
            let problem = if t.len() < MIN_TOKEN_LEN {
                Some("is too short")
            } else if t.len() > MAX_TOKEN_LEN {
                Some("is too long")
            } else if !t.bytes().all(|b| b.is_ascii_graphic()) {
                Some("has a character that is not visible ASCII")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(TokenError::Invalid {
                    index: i + 1,
                    problem,
                });
            }
        }
        if all.is_empty() && !allow_anonymous {
            return Err(TokenError::None);
        }
        Ok(Self(all.into_iter().map(String::into_bytes).collect()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the request carries a configured token (always, when none is configured).
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), AppError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let Some(presented) = bearer(headers) else {
            return Err(AppError::Unauthorized { invalid: false });
        };
        // No early exit: every configured token is compared, whichever matches.
        let mut ok = subtle::Choice::from(0);
        for token in self.0.iter() {
            ok |= token.as_slice().ct_eq(presented);
        }
        if bool::from(ok) {
            Ok(())
        } else {
            Err(AppError::Unauthorized { invalid: true })
        }
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty() && token.len() <= MAX_TOKEN_LEN).then_some(token)
}

/// Per-client-IP write rate, `None` when turned off.
#[derive(Clone, Default)]
pub struct WriteLimiter(Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>);

impl std::fmt::Debug for WriteLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "WriteLimiter(on)"
        } else {
            "WriteLimiter(off)"
        })
    }
}

impl WriteLimiter {
    /// `per_second` 0 turns the limit off; `burst` is at least 1.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let Some(rate) = NonZeroU32::new(per_second) else {
            return Self(None);
        };
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Self(Some(Arc::new(RateLimiter::keyed(
            Quota::per_second(rate).allow_burst(burst),
        ))))
    }

    /// Ok, or how long the client must wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.0 else {
            return Ok(());
        };
        limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets idle clients every [`LIMITER_SWEEP`] until the task is aborted.
    pub fn spawn_sweeper(&self) -> Option<tokio::task::JoinHandle<()>> {
        let limiter = Arc::clone(self.0.as_ref()?);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(LIMITER_SWEEP);
            loop {
                tick.tick().await;
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }))
    }
}

/// Middleware on the write routes: rate limit first (so guessing tokens is slow too), then
/// the token. Reads (`GET`, `HEAD`) pass untouched.
pub async fn guard_writes(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    if let Err(wait) = state.write_limiter.check(peer.ip()) {
        return AppError::RateLimited(wait).into_response();
    }
    if let Err(e) = state.tokens.authorize(req.headers()) {
        return e.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const A: &str = "token-a-0123456789abcdef";
    const B: &str = "token-b-0123456789abcdef";

    fn tokens(list: &[&str]) -> Tokens {
        let listed: Vec<ApiToken> = list.iter().map(|t| ApiToken((*t).to_owned())).collect();
        Tokens::new(&listed, None, None, false).unwrap()
    }

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn authorization_header_cases() {
        let t = tokens(&[A, B]);
        let cases: &[(Option<&str>, Result<(), bool>)] = &[
            (Some(&format!("Bearer {A}")), Ok(())),
            (Some(&format!("Bearer {B}")), Ok(())), // rotation: either token works
            (Some(&format!("bearer {A}")), Ok(())), // the scheme is case-insensitive
            (Some(&format!("Bearer  {A} ")), Ok(())),
            (Some(&format!("Bearer {A}x")), Err(true)),
            (Some(&format!("Bearer {}", &A[..A.len() - 1])), Err(true)),
            (Some(&format!("Basic {A}")), Err(false)),
            (Some(A), Err(false)),
            (Some("Bearer "), Err(false)),
            (None, Err(false)),
        ];
        for (header, want) in cases {
            let headers = header.map(with_auth).unwrap_or_default();
            let got = t.authorize(&headers).map_err(|e| match e {
                AppError::Unauthorized { invalid } => invalid,
                other => panic!("{other:?}"),
            });
            assert_eq!(&got, want, "{header:?}");
        }
    }

    #[test]
    fn no_tokens_needs_an_explicit_opt_out() {
        assert!(matches!(
            Tokens::new(&[], None, None, false),
            Err(TokenError::None)
        ));
        let open = Tokens::new(&[], None, None, true).unwrap();
        assert!(open.is_empty());
        assert!(open.authorize(&HeaderMap::new()).is_ok());
        // Empty entries (a trailing comma, an empty env value) are not tokens.
        let listed = [ApiToken(String::new()), ApiToken(" ".into())];
        assert!(matches!(
            Tokens::new(&listed, None, None, false),
            Err(TokenError::None)
        ));
    }

    #[test]
    fn weak_or_malformed_tokens_stop_the_start_without_echoing_them() {
        for bad in [
            "hunter2",
            "has space in the middle!",
            &"x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            let err = Tokens::new(&[ApiToken(bad.into())], None, None, false).unwrap_err();
            assert!(matches!(err, TokenError::Invalid { index: 1, .. }), "{bad}");
            assert!(!err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn tokens_come_from_the_list_the_file_and_the_operator() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, format!("# rotated in on Monday\n{B}\n\n")).unwrap();
        let op = ApiToken("operator-token-0123456789".into());
        let t = Tokens::new(&[ApiToken(A.into())], Some(&file), Some(&op), false).unwrap();
        assert_eq!(t.len(), 3);
        for token in [A, B, "operator-token-0123456789"] {
            assert!(t.authorize(&with_auth(&format!("Bearer {token}"))).is_ok());
        }
        let missing = Tokens::new(&[], Some(&dir.path().join("nope")), None, false);
        assert!(matches!(missing, Err(TokenError::File { .. })));
    }

    #[test]
    fn the_limiter_allows_a_burst_then_says_how_long_to_wait() {
        let limiter = WriteLimiter::new(1, 3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.check(ip).is_ok());
        }
        let wait = limiter.check(ip).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another client has its own allowance.
        assert!(limiter.check("10.0.0.2".parse().unwrap()).is_ok());
        // Off means off.
        let off = WriteLimiter::new(0, 0);
        for _ in 0..1000 {
            assert!(off.check(ip).is_ok());
        }
    }
}
