//! Command-line and environment configuration. Names follow docs/contracts.md: the operator
//! and testenv set the env variables, so they must not drift.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::store::StoreArg;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "shortener",
    version,
    about = "A URL shortener backed by SQLite or PostgreSQL"
)]
pub struct Config {
    /// Address to bind.
    #[arg(long, env = "SHORTENER_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port to bind (0 picks a free port; the chosen address is logged).
    #[arg(long, env = "SHORTENER_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Where URLs are stored: a SQLite file (a path or `sqlite:///path`; processes given the
    /// same file share their URLs) or `postgres://user@host:port/db` (missing parts and the
    /// password may come from PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE).
    // hide_env_values: `--help` must not print a password taken from the env.
    #[arg(
        long,
        env = "SHORTENER_STORE",
        default_value = "shortener.db",
        hide_env_values = true
    )]
    pub store: StoreArg,

    /// Commit concurrent creates together, one transaction and one fsync per batch (each
    /// create is still answered only after the commit that holds it). `false`: one commit
    /// per create.
    #[arg(long, env = "SHORTENER_GROUP_COMMIT", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub group_commit: bool,

    /// Base of `short_url` in responses, e.g. `https://sho.rt`. Without it, `http://` plus
    /// the request's Host header if that host is in `--allowed-hosts`, else
    /// `http://localhost:<port>`: never a Host a client made up.
    #[arg(long, env = "SHORTENER_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Hosts (without port) whose Host header may form `short_url` when `--public-url` is
    /// not set; comma separated.
    #[arg(
        long,
        env = "SHORTENER_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,[::1]"
    )]
    pub allowed_hosts: Vec<String>,

    /// Bearer tokens accepted for creates and deletes, comma separated (several, so a token
    /// can be rotated without downtime). Never logged.
    #[arg(
        long,
        env = "SHORTENER_API_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_tokens: Vec<ApiToken>,

    /// A file of more accepted tokens, one per line (e.g. a mounted Secret).
    #[arg(long, env = "SHORTENER_API_TOKENS_FILE")]
    pub api_tokens_file: Option<PathBuf>,

    /// One more accepted token: the operator sets it from its per-release Secret so its
    /// smoke test can create a URL. Never logged.
    #[arg(long, env = "SHORTENER_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<ApiToken>,

    /// Serve creates and deletes without a token. For local runs only; logged as a WARN.
    #[arg(long, env = "SHORTENER_ALLOW_ANONYMOUS_WRITES")]
    pub allow_anonymous_writes: bool,

    /// Writes (creates and deletes, with or without a valid token) one client IP may make per
    /// second on average; 0 turns the limit off.
    #[arg(long, env = "SHORTENER_WRITE_RATE_LIMIT", default_value_t = 50)]
    pub write_rate_limit: u32,

    /// Writes one client IP may make at once above the average rate.
    #[arg(long, env = "SHORTENER_WRITE_BURST", default_value_t = 100)]
    pub write_burst: u32,

    /// A connection that has started sending a request's headers must finish them within
    /// this time, or it is closed.
    #[arg(long, env = "SHORTENER_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// A request's body must arrive within this time of its headers, or it is answered 408.
    #[arg(long, env = "SHORTENER_BODY_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Duration,

    /// A keep-alive connection with no request for this long is closed. Longer than the
    /// usual load balancer idle timeout (60 s), so the balancer, not us, closes first.
    #[arg(long, env = "SHORTENER_IDLE_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Open connections at most; a connection over the cap is answered 503 and closed.
    #[arg(long, env = "SHORTENER_MAX_CONNECTIONS", default_value_t = 1000)]
    pub max_connections: usize,

    /// HTTP worker threads, each with its own listener on the port (`SO_REUSEPORT`), 1..=256.
    /// Default: one per CPU the process may use (its cgroup's CPU limit counts).
    #[arg(long, env = "SHORTENER_HTTP_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub http_workers: Option<u16>,

    /// Time a resolved redirect is served from memory before the store is asked again: how
    /// long a delete made through another replica may take to be seen here.
    #[arg(long, env = "SHORTENER_REDIRECT_CACHE_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub redirect_cache_ttl: Duration,

    /// Memory for cached redirects, in MiB; 0 turns the cache off.
    #[arg(long, env = "SHORTENER_REDIRECT_CACHE_MIB", default_value_t = 32)]
    pub redirect_cache_mib: u64,

    /// Log line format.
    #[arg(long, env = "SHORTENER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Longest time a request may take before it is answered with 503.
    #[arg(long, env = "SHORTENER_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// After SIGTERM, keep serving this long while /readyz answers 503, so load balancers
    /// stop sending traffic before the listener closes (Kubernetes removes a terminating
    /// pod from its Service's endpoints a moment after it has signalled the pod).
    #[arg(long, env = "SHORTENER_SHUTDOWN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,

    /// Fault injection for game days; see shortener/README.md. Off when unset.
    #[arg(long, env = "SHORTENER_FAULT", hide = true)]
    pub fault: Option<String>,

    /// Version reported in logs and `shortener_build_info{version}`.
    #[arg(long, env = "SHORTENER_VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    pub release_version: String,
}

/// A bearer token. Its `Debug` hides the value, so printing the config never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(pub String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl std::str::FromStr for ApiToken {
    type Err = std::convert::Infallible;

    /// Checked later, with the file's tokens, by `auth::Tokens::new`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_well_formed() {
        Config::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::try_parse_from(["shortener"]).unwrap();
        assert_eq!(c.host.to_string(), "0.0.0.0");
        assert_eq!(c.port, 8080);
        assert_eq!(c.store.as_str(), "shortener.db");
        assert!(c.group_commit);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.public_url, None);
        assert_eq!(c.allowed_hosts, ["localhost", "127.0.0.1", "[::1]"]);
        assert!(c.api_tokens.is_empty() && !c.allow_anonymous_writes);
    }

    #[test]
    fn tokens_are_a_comma_separated_list_and_never_printed() {
        let c = Config::try_parse_from([
            "shortener",
            "--api-tokens",
            "first-token-0123456789,second-token-0123456789",
        ])
        .unwrap();
        assert_eq!(c.api_tokens.len(), 2);
        let printed = format!("{c:?}");
        assert!(!printed.contains("first-token"), "{printed}");
    }

    #[test]
    fn group_commit_can_be_switched_off() {
        let c = Config::try_parse_from(["shortener", "--group-commit", "off"]).unwrap();
        assert!(!c.group_commit);
        let c = Config::try_parse_from(["shortener", "--group-commit", "false"]).unwrap();
        assert!(!c.group_commit);
    }
}
