//! Which Prometheus servers the operator may query (`--prometheus-allow`).
//!
//! `spec.analysis.prometheus.address` is the tenant's, and the operator sends the request
//! from inside the cluster network with its own network rights, so without a guard a tenant
//! could make it send GETs anywhere: the API server, another tenant's Services, the cloud
//! metadata service (server-side request forgery). The webhook egress policy
//! (`crate::incident::egress`) refuses cluster-internal names, but a Prometheus is usually
//! exactly that (`prometheus.monitoring.svc`), so Prometheus gets its own list, written by
//! the cluster admin, of the servers tenants may name. The default is the empty list: no
//! Prometheus address is allowed until the admin names one.
//!
//! Entries, comma-separated:
//! - `http://prometheus.monitoring.svc:9090`: that origin (scheme, host and port; the port
//!   defaults to the scheme's). With a path (`https://thanos.example.com/prom`) the address
//!   must have that path or one below it.
//! - `prometheus.monitoring.svc` or `prometheus.monitoring.svc:9090`: that host, over http or
//!   https, on any port or on that one.
//! - `*.monitoring.svc` (with an optional `:port`): every host below that domain.
//! - `*`: any address (turns the guard off).
//!
//! Host names are matched as written (lower case, a trailing dot ignored), IP literals after
//! normalisation (`http://0x7f000001` is `127.0.0.1`); nothing is resolved. A name is
//! therefore only as safe as its DNS: allow names the cluster admin controls.

use reqwest::Url;

/// The flag users set; named in refusals so the fix is obvious.
pub const FLAG: &str = "--prometheus-allow";

/// One allowed origin, host or domain.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// `None`: http or https.
    scheme: Option<String>,
    host: Host,
    /// `None`: any port.
    port: Option<u16>,
    /// Path prefix without a trailing `/`; empty: any path.
    path: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Any,
    Exact(String),
    /// `*.suffix`: hosts ending in `.suffix` (not `suffix` itself).
    Below(String),
}

/// The operator-wide allow-list of Prometheus addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrometheusAllow {
    entries: Vec<Entry>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {FLAG} entry {0:?}: expected an origin (http://prometheus.monitoring.svc:9090), \
     a host (prometheus.monitoring.svc[:9090]), a domain (*.monitoring.svc) or *"
)]
pub struct EntryError(String);

/// Why an address was refused: names the host, never more than the address the tenant wrote.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "Prometheus address {address} is not allowed: its origin {origin} is not in the \
         operator's {FLAG} list (the cluster admin sets it, chart value prometheusAnalysis.allow)"
    )]
    NotListed { address: String, origin: String },
    #[error(
        "Prometheus address {address} is not allowed: the operator's {FLAG} list is empty, \
         so no Prometheus may be queried until the cluster admin names one (chart value \
         prometheus.allow)"
    )]
    NoneAllowed { address: String },
    #[error("Prometheus address {address} is not a valid http(s) URL")]
    Invalid { address: String },
}

impl PrometheusAllow {
    /// Parses a comma-separated list; an empty string is the empty list.
    pub fn parse_list(list: &str) -> Result<Self, EntryError> {
        let entries = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_entry)
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// Whether the operator may query `address` (a `spec.analysis.prometheus.address`).
    pub fn check(&self, address: &str) -> Result<(), Refused> {
        let invalid = || Refused::Invalid {
            address: address.to_string(),
        };
        let url = Url::parse(address).map_err(|_| invalid())?;
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(invalid());
        }
        let host = url.host_str().map(normal_host).ok_or_else(invalid)?;
        let port = url.port_or_known_default().ok_or_else(invalid)?;
        let path = url.path().trim_end_matches('/');
        if self
            .entries
            .iter()
            .any(|e| e.matches(scheme, &host, port, path))
        {
            return Ok(());
        }
        if self.entries.is_empty() {
            return Err(Refused::NoneAllowed {
                address: address.to_string(),
            });
        }
        Err(Refused::NotListed {
            address: address.to_string(),
            origin: format!("{scheme}://{host}:{port}"),
        })
    }
}

impl Entry {
    fn matches(&self, scheme: &str, host: &str, port: u16, path: &str) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let host_ok = match &self.host {
            Host::Any => true,
            Host::Exact(h) => h == host,
            Host::Below(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|rest| !rest.is_empty()),
        };
        let port_ok = self.port.is_none_or(|p| p == port);
        // On a segment boundary: `/prom` allows `/prom` and `/prom/x`, not `/prometheus`.
        let path_ok = self.path.is_empty()
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        scheme_ok && host_ok && port_ok && path_ok
    }
}

/// Lower case, without the trailing dot of an absolute name.
fn normal_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn parse_entry(text: &str) -> Result<Entry, EntryError> {
    let bad = || EntryError(text.to_string());
    if text == "*" {
        return Ok(Entry {
            scheme: None,
            host: Host::Any,
            port: None,
            path: String::new(),
        });
    }
    let (scheme, rest) = match text.split_once("://") {
        Some((s, rest)) if s == "http" || s == "https" => (Some(s.to_string()), rest),
        Some(_) => return Err(bad()),
        None => (None, text),
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.contains(['@', '?', '#']) || path.contains(['?', '#']) {
        return Err(bad());
    }
    let (wildcard, authority) = match authority.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, authority),
    };
    // The URL parser normalises the host (and IP literals) as it will the address's; the
    // port is taken from the text, since the parser drops one equal to the default.
    let url = Url::parse(&format!("http://{authority}/")).map_err(|_| bad())?;
    let host = url.host_str().map(normal_host).ok_or_else(bad)?;
    if host.is_empty() {
        return Err(bad());
    }
    let explicit_port = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !p.contains(']') => {
            Some(p.parse::<u16>().map_err(|_| bad())?)
        }
        _ => None,
    };
    let port = match (&scheme, explicit_port) {
        (_, Some(p)) => Some(p),
        (Some(s), None) => Some(if s == "https" { 443 } else { 80 }),
        (None, None) => None,
    };
    // `*.` goes with a domain only; an IP literal has no subdomains.
    if wildcard && (host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok()) {
        return Err(bad());
    }
    Ok(Entry {
        scheme,
        host: if wildcard {
            Host::Below(format!(".{host}"))
        } else {
            Host::Exact(host)
        },
        port,
        path: path.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_refuses_bad_entries() {
        assert_eq!(
            PrometheusAllow::parse_list("").unwrap(),
            PrometheusAllow::default()
        );
        assert_eq!(
            PrometheusAllow::parse_list(" a.svc , http://b.svc:9090 ,")
                .unwrap()
                .entries
                .len(),
            2
        );
        for bad in [
            "ftp://p.svc",
            "http://user@p.svc",
            "p.svc:99999",
            "p.svc:x",
            "http://p.svc/?q",
            "*.10.0.0.1",
            "http://",
            "p svc",
        ] {
            assert!(PrometheusAllow::parse_list(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn decisions() {
        let list = "http://prometheus.monitoring.svc:9090, thanos.obs.svc, \
                    *.metrics.example.com:443, https://prom.example.com/tenant-a, 127.0.0.1, \
                    [::1]:9090";
        let allow = PrometheusAllow::parse_list(list).unwrap();
        for (address, ok) in [
            // origin: scheme, host and port must all match
            ("http://prometheus.monitoring.svc:9090", true),
            ("http://prometheus.monitoring.svc:9090/", true),
            ("http://PROMETHEUS.monitoring.svc.:9090", true),
            ("https://prometheus.monitoring.svc:9090", false),
            ("http://prometheus.monitoring.svc:9091", false),
            ("http://prometheus.monitoring.svc", false),
            ("http://prometheus.monitoring:9090", false),
            // host: any scheme, any port
            ("http://thanos.obs.svc:10902", true),
            ("https://thanos.obs.svc", true),
            ("http://evil.thanos.obs.svc", false),
            // domain: hosts below it on that port, not the domain itself
            ("https://eu.metrics.example.com", true),
            ("http://a.b.metrics.example.com:443", true),
            ("https://metrics.example.com", false),
            ("https://eu.metrics.example.com:8443", false),
            ("https://xmetrics.example.com", false),
            // path prefix on a segment boundary
            ("https://prom.example.com/tenant-a", true),
            ("https://prom.example.com/tenant-a/api", true),
            ("https://prom.example.com/tenant-ab", false),
            ("https://prom.example.com/", false),
            // IP literals, normalised
            ("http://127.0.0.1:19090", true),
            ("http://0x7f000001:9090", true),
            ("http://127.0.0.2:9090", false),
            ("http://[::1]:9090", true),
            ("http://[::1]:9091", false),
            // the usual SSRF targets
            ("http://169.254.169.254", false),
            ("https://kubernetes.default.svc", false),
            ("http://other-tenant.svc:8080", false),
        ] {
            assert_eq!(allow.check(address).is_ok(), ok, "{address}");
        }
    }

    #[test]
    fn default_allows_nothing_and_star_everything() {
        let none = PrometheusAllow::default();
        assert!(matches!(
            none.check("http://prometheus.monitoring.svc:9090"),
            Err(Refused::NoneAllowed { .. })
        ));
        let all = PrometheusAllow::parse_list("*").unwrap();
        assert!(all.check("http://anything.example:1234/x").is_ok());
        assert!(matches!(
            all.check("not a url"),
            Err(Refused::Invalid { .. })
        ));
    }

    #[test]
    fn refusal_names_the_origin_and_the_flag() {
        let allow = PrometheusAllow::parse_list("prometheus.monitoring.svc").unwrap();
        let err = allow
            .check("http://kubernetes.default.svc:443/api")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http://kubernetes.default.svc:443"), "{err}");
        assert!(err.contains(FLAG), "{err}");
    }
}
