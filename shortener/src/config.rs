//! Command-line and environment configuration. Names follow docs/contracts.md: the operator
//! and testenv set the env variables, so they must not drift.

use std::net::IpAddr;
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

    /// Base of `short_url` in responses, e.g. `https://sho.rt`. Default: `http://` plus the
    /// request's Host header.
    #[arg(long, env = "SHORTENER_PUBLIC_URL")]
    pub public_url: Option<String>,

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
    }

    #[test]
    fn group_commit_can_be_switched_off() {
        let c = Config::try_parse_from(["shortener", "--group-commit", "off"]).unwrap();
        assert!(!c.group_commit);
        let c = Config::try_parse_from(["shortener", "--group-commit", "false"]).unwrap();
        assert!(!c.group_commit);
    }
}
