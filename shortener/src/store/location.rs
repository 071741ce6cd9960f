//! Where the store lives, from `--store`/`SHORTENER_STORE`: a SQLite file (a plain path or a
//! `sqlite://` URL) or a PostgreSQL URL. Parsing is pure; the redacted form is the only one
//! that reaches a log or an error message, because the URL may carry a password.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The `--store` value as given. Its `Debug` is redacted so that `Config` can derive `Debug`
/// without a password ever being printed.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreArg(String);

impl FromStr for StoreArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for StoreArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Location::parse(&self.0, |_| None) {
            Ok(l) => write!(f, "StoreArg({l})"),
            Err(_) => f.write_str("StoreArg(<unparsable>)"),
        }
    }
}

impl StoreArg {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocationError {
    #[error("unsupported store scheme {0:?}: use a file path, sqlite:///path or postgres://...")]
    Scheme(String),
    #[error("the sqlite store URL names no file")]
    EmptyPath,
    #[error("sqlite store URLs take no query string (got {0:?})")]
    SqliteQuery(String),
    // The parser's message never echoes the URL, so this cannot carry the password.
    #[error("invalid postgres URL: {0}")]
    Postgres(String),
    #[error("the postgres store needs a host (in the URL or PGHOST)")]
    NoHost,
    #[error("the postgres store needs a user (in the URL or PGUSER)")]
    NoUser,
    #[error("{var} is not a port number")]
    Port { var: &'static str },
}

#[derive(Clone)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(Box<tokio_postgres::Config>),
}

impl Location {
    /// Parses the store argument; `env` supplies libpq's `PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGPASSWORD` and `PGDATABASE` (so a Secret can supply them) (the process env in
    /// production, a table in tests). Values in the URL win over the env.
    /// Surrounding whitespace is dropped: a URL put in a Secret with `echo` or from a file
    /// ends with a newline, which would otherwise end up in the database name.
    pub fn parse(arg: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, LocationError> {
        let arg = arg.trim();
        let lower = arg.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return parse_postgres(arg, env).map(|c| Self::Postgres(Box::new(c)));
        }
        if let Some(rest) =
            strip_prefix_ci(arg, "sqlite://").or_else(|| strip_prefix_ci(arg, "sqlite:"))
        {
            if rest.contains('?') {
                return Err(LocationError::SqliteQuery(rest.to_owned()));
            }
            if rest.is_empty() {
                return Err(LocationError::EmptyPath);
            }
            return Ok(Self::Sqlite(PathBuf::from(rest)));
        }
        if let Some((scheme, _)) = arg.split_once("://") {
            return Err(LocationError::Scheme(scheme.to_owned()));
        }
        if arg.is_empty() {
            return Err(LocationError::EmptyPath);
        }
        Ok(Self::Sqlite(PathBuf::from(arg)))
    }

    /// From the process environment.
    pub fn from_arg(arg: &StoreArg) -> Result<Self, LocationError> {
        Self::parse(arg.as_str(), |k| std::env::var(k).ok())
    }
}

/// The loggable form: a SQLite path as is; a PostgreSQL URL rebuilt from its parts with the
/// password replaced by `***` (rebuilt rather than edited, so a password given as a query
/// parameter cannot slip through either).
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(c) => {
                f.write_str("postgres://")?;
                if let Some(user) = c.get_user() {
                    f.write_str(user)?;
                    if c.get_password().is_some() {
                        f.write_str(":***")?;
                    }
                    f.write_str("@")?;
                }
                for (i, host) in c.get_hosts().iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    match host {
                        tokio_postgres::config::Host::Tcp(h) => f.write_str(h)?,
                        tokio_postgres::config::Host::Unix(p) => write!(f, "{}", p.display())?,
                    }
                    if let Some(port) = c.get_ports().get(i).or(c.get_ports().first()) {
                        write!(f, ":{port}")?;
                    }
                }
                write!(f, "/{}", c.get_dbname().unwrap_or_default())
            }
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn parse_postgres(
    arg: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<tokio_postgres::Config, LocationError> {
    let mut config = tokio_postgres::Config::from_str(arg)
        .map_err(|e| LocationError::Postgres(e.to_string()))?;
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        let host = var("PGHOST").ok_or(LocationError::NoHost)?;
        for h in host.split(',') {
            config.host(h);
        }
    }
    if config.get_ports().is_empty()
        && let Some(port) = var("PGPORT")
    {
        let port = port
            .parse()
            .map_err(|_| LocationError::Port { var: "PGPORT" })?;
        config.port(port);
    }
    if config.get_user().is_none() {
        config.user(var("PGUSER").ok_or(LocationError::NoUser)?);
    }
    if config.get_password().is_none()
        && let Some(password) = var("PGPASSWORD")
    {
        config.password(password);
    }
    if config.get_dbname().is_none() {
        let db = var("PGDATABASE").or_else(|| config.get_user().map(str::to_owned));
        if let Some(db) = db {
            config.dbname(db);
        }
    }
    if config.get_ports().is_empty() {
        config.port(5432);
    }
    Ok(config)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn locations_and_their_loggable_form() {
        let env: &[(&str, &str)] = &[("PGPASSWORD", "from-env-secret")];
        let cases: &[(&str, &str)] = &[
            ("shortener.db", "sqlite://shortener.db"),
            ("/data/shortener.db", "sqlite:///data/shortener.db"),
            ("sqlite:///data/s.db", "sqlite:///data/s.db"),
            ("sqlite://rel.db", "sqlite://rel.db"),
            ("SQLITE:/abs.db", "sqlite:///abs.db"),
            (
                "postgres://app:hunter2@db.example:6543/links",
                "postgres://app:***@db.example:6543/links",
            ),
            // The password from PGPASSWORD is redacted too; the port defaults to 5432.
            (
                "postgresql://app@db/links",
                "postgres://app:***@db:5432/links",
            ),
            (
                "postgres://app:pw@db/links?password=other&sslmode=disable",
                "postgres://app:***@db:5432/links",
            ),
        ];
        for (arg, want) in cases {
            let loc = Location::parse(arg, env_of(env)).unwrap();
            assert_eq!(loc.to_string(), *want, "{arg}");
            assert!(!format!("{loc:?}").contains("hunter2"));
            assert!(!loc.to_string().contains("from-env-secret"));
        }
    }

    #[test]
    fn postgres_parts_come_from_env_when_the_url_leaves_them_out() {
        let loc = Location::parse(
            "postgres://",
            env_of(&[
                ("PGHOST", "pg.svc"),
                ("PGPORT", "5433"),
                ("PGUSER", "shortener"),
                ("PGPASSWORD", "s3cret"),
                ("PGDATABASE", "urls"),
            ]),
        )
        .unwrap();
        let Location::Postgres(c) = &loc else {
            panic!("{loc}")
        };
        assert_eq!(c.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(loc.to_string(), "postgres://shortener:***@pg.svc:5433/urls");
        // The URL wins over the env.
        let loc = Location::parse(
            "postgres://u@h:1/d",
            env_of(&[("PGHOST", "other"), ("PGUSER", "x"), ("PGDATABASE", "y")]),
        )
        .unwrap();
        assert_eq!(loc.to_string(), "postgres://u@h:1/d");
        // The newline a Secret made from a file or `echo` keeps is not part of the name.
        let loc = Location::parse("postgres://u@h:1/links\n", env_of(&[])).unwrap();
        assert_eq!(loc.to_string(), "postgres://u@h:1/links");
        // The database defaults to the user's name, as in libpq.
        let loc = Location::parse("postgres://u@h", env_of(&[])).unwrap();
        assert_eq!(loc.to_string(), "postgres://u@h:5432/u");
    }

    #[test]
    fn bad_locations_are_clear_errors_that_never_echo_a_password() {
        let cases: &[(&str, LocationError)] = &[
            ("mysql://u:pw@h/d", LocationError::Scheme("mysql".into())),
            ("sqlite://", LocationError::EmptyPath),
            ("", LocationError::EmptyPath),
            (
                "sqlite:///s.db?mode=ro",
                LocationError::SqliteQuery("/s.db?mode=ro".into()),
            ),
            ("postgres:///d", LocationError::NoHost),
            ("postgres://h/d", LocationError::NoUser),
        ];
        for (arg, want) in cases {
            assert_eq!(
                Location::parse(arg, env_of(&[])).unwrap_err(),
                *want,
                "{arg}"
            );
        }
        let err = Location::parse("postgres://u:hunter2@h:notaport/d", env_of(&[])).unwrap_err();
        assert!(matches!(err, LocationError::Postgres(_)), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = Location::parse("postgres://u@h/d", env_of(&[])).map(|_| ());
        assert!(err.is_ok());
        let err = Location::parse("postgres://", env_of(&[("PGHOST", "h"), ("PGPORT", "x")]));
        assert_eq!(err.unwrap_err(), LocationError::Port { var: "PGPORT" });
    }

    #[test]
    fn store_arg_debug_is_redacted() {
        let arg: StoreArg = "postgres://u:hunter2@h/d".parse().unwrap();
        let shown = format!("{arg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("u:***@h"), "{shown}");
    }
}
