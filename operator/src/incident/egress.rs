//! Where incident webhooks may go. The URL comes from a tenant's Secret, and the operator
//! runs with cluster credentials inside the cluster network, so without a guard a tenant
//! could make it POST to the cloud metadata service, to the API server or to any in-cluster
//! Service (server-side request forgery).
//!
//! The policy refuses, by default, every address that is not a public unicast address:
//! loopback, link-local (169.254/16, fe80::/10, where the metadata services live), known
//! metadata addresses outside those ranges, unspecified, multicast, broadcast, private
//! (RFC 1918, fc00::/7, where Service and pod CIDRs usually are), shared (100.64/10) and
//! reserved ranges; and cluster-internal host names (`*.svc`, `*.cluster.local`,
//! `localhost`, names without a dot that the resolver's search path would complete). An
//! operator-wide allow-list of CIDRs (`--webhook-allow-cidr`) opts addresses back in.
//!
//! The check runs on every address the host resolves to, inside the HTTP client's resolver,
//! so the client connects to exactly the addresses that were checked: a name that resolves
//! to a public address when checked and to 169.254.169.254 when connecting (DNS rebinding)
//! cannot slip through. Names are resolved as absolute (a trailing dot), so the pod's DNS
//! search path cannot turn `hooks.example.com` into `hooks.example.com.<ns>.svc.cluster.local`.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

/// Why a webhook target was refused. Names the host and the class, never the URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("webhook target {host} refused: {class} (allow it with --webhook-allow-cidr)")]
pub struct Refusal {
    pub host: String,
    pub class: Class,
}

/// The kinds of non-public targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Unspecified,
    Loopback,
    LinkLocal,
    Metadata,
    Multicast,
    Broadcast,
    Private,
    Shared,
    Reserved,
    ClusterName,
    Unresolved,
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Class::Unspecified => "unspecified address",
            Class::Loopback => "loopback address",
            Class::LinkLocal => "link-local address",
            Class::Metadata => "cloud metadata address",
            Class::Multicast => "multicast address",
            Class::Broadcast => "broadcast address",
            Class::Private => "private or cluster-internal address",
            Class::Shared => "shared (carrier-grade NAT) address",
            Class::Reserved => "reserved address",
            Class::ClusterName => "cluster-internal host name",
            Class::Unresolved => "host name resolves to no address",
        })
    }
}

/// An address block, `10.0.0.0/8` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected ADDRESS/PREFIX, e.g. 10.0.0.0/8 or fd00::/8")]
pub struct CidrError(String);

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()),
                u128::from(ip.to_bits()),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(net.to_bits(), ip.to_bits(), 128, self.prefix)
            }
            // An IPv4 block also covers the IPv4-mapped IPv6 form of its addresses.
            (IpAddr::V4(_), IpAddr::V6(ip)) => ip
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, width: u32, prefix: u8) -> bool {
    let host_bits = width - u32::from(prefix);
    host_bits >= width || (a >> host_bits) == (b >> host_bits)
}

/// The operator-wide policy: refuse non-public targets except the allow-listed blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<Cidr>,
}

impl EgressPolicy {
    pub fn allowing(allow: Vec<Cidr>) -> Self {
        Self { allow }
    }

    /// Parses a comma-separated list (`--webhook-allow-cidr 10.0.0.0/8,127.0.0.1/32`).
    pub fn parse_list(list: &str) -> Result<Self, CidrError> {
        let allow = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        Ok(Self { allow })
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|c| c.contains(ip))
    }

    /// Whether `host` may be reached at `ip`. An allow-listed address is always fine; else a
    /// cluster-internal name is refused whatever it resolves to, and so is a non-public
    /// address.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        if self.allowed(ip) {
            return Ok(());
        }
        let refuse = |class| {
            Err(Refusal {
                host: host.to_string(),
                class,
            })
        };
        if cluster_internal_name(host) {
            return refuse(Class::ClusterName);
        }
        match classify(ip) {
            Some(class) => refuse(class),
            None => Ok(()),
        }
    }

    /// Check that needs no resolution: a cluster-internal name with nothing allow-listed
    /// can only be refused (saves the retries of a doomed delivery).
    pub fn precheck_name(&self, host: &str) -> Result<(), Refusal> {
        if self.allow.is_empty() && cluster_internal_name(host) {
            return Err(Refusal {
                host: host.to_string(),
                class: Class::ClusterName,
            });
        }
        Ok(())
    }

    /// The resolved addresses that may be connected to; refused if none is left.
    pub fn filter(&self, host: &str, resolved: &[IpAddr]) -> Result<Vec<IpAddr>, Refusal> {
        let mut first_refusal = None;
        let mut kept = Vec::new();
        for &ip in resolved {
            match self.check(host, ip) {
                Ok(()) => kept.push(ip),
                Err(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        if kept.is_empty() {
            return Err(first_refusal.unwrap_or(Refusal {
                host: host.to_string(),
                class: Class::Unresolved,
            }));
        }
        Ok(kept)
    }
}

/// Names that only mean something inside the cluster (or on the node).
pub fn cluster_internal_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    // A name without a dot is completed by the search path (`kubernetes` becomes
    // `kubernetes.default.svc.cluster.local`).
    !host.contains('.')
        || [
            ".svc",
            ".cluster.local",
            ".localhost",
            ".local",
            ".internal",
        ]
        .iter()
        .any(|suffix| host.ends_with(suffix))
}

/// Metadata services, some at addresses outside the link-local block.
const METADATA: [IpAddr; 4] = [
    // AWS, GCP, Azure, OpenStack... (inside 169.254/16, named here for the clearer message).
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    // Azure wire server (a public address, answered on the host).
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),
    // Alibaba Cloud (inside 100.64/10, named here for the clearer message).
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    // AWS IMDS over IPv6 (inside fc00::/7).
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// The class of a non-public address; `None` for a public unicast one.
pub fn classify(ip: IpAddr) -> Option<Class> {
    if METADATA.contains(&ip) {
        return Some(Class::Metadata);
    }
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Class> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        // 0.0.0.0/8: "this network"; connecting to 0.0.0.0 reaches the local host.
        _ if a == 0 => Class::Unspecified,
        _ if ip.is_loopback() => Class::Loopback,
        _ if ip.is_link_local() => Class::LinkLocal,
        _ if ip.is_private() => Class::Private,
        _ if a == 100 && (64..128).contains(&b) => Class::Shared,
        _ if ip.is_broadcast() => Class::Broadcast,
        _ if ip.is_multicast() => Class::Multicast,
        // 240/4 (future use), 192.0.0.0/24 (protocol assignments), 198.18/15 (benchmarking).
        _ if a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18) => {
            Class::Reserved
        }
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Class> {
    // Forms that carry an IPv4 address reach that address: judge it.
    if let Some(v4) = embedded_v4(ip) {
        return classify(IpAddr::V4(v4));
    }
    let first = ip.segments()[0];
    Some(match () {
        _ if ip.is_unspecified() => Class::Unspecified,
        _ if ip.is_loopback() => Class::Loopback,
        _ if ip.is_multicast() => Class::Multicast,
        // fe80::/10
        _ if first & 0xffc0 == 0xfe80 => Class::LinkLocal,
        // fc00::/7 unique local; fec0::/10 the deprecated site-local.
        _ if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 => Class::Private,
        // Everything outside 2000::/3 (global unicast) is unassigned or special.
        _ if first & 0xe000 != 0x2000 => Class::Reserved,
        _ => return None,
    })
}

/// The IPv4 address inside an IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d),
/// NAT64 (64:ff9b::/96) or 6to4 (2002::/16) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // ::a.b.c.d, except :: and ::1 which are IPv6's own.
    if s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

/// Name resolution, replaceable in tests.
pub type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The system resolver, asked for the name as absolute (no search path).
pub fn system_lookup() -> Lookup {
    Arc::new(|name: String| {
        Box::pin(async move {
            let absolute = if name.ends_with('.') {
                name
            } else {
                format!("{name}.")
            };
            let addrs = tokio::net::lookup_host((absolute.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    })
}

/// The webhook client's resolver: resolves, then keeps only the addresses the policy
/// allows. The client connects to what this returns, so what is checked is what is used.
pub struct GuardedResolver {
    pub policy: Arc<EgressPolicy>,
    pub lookup: Lookup,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let lookup = self.lookup.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved = lookup(host.clone()).await?;
            let kept = policy.filter(&host, &resolved)?;
            let addrs: reqwest::dns::Addrs =
                Box::new(kept.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn address_classes() {
        use Class::*;
        let cases: &[(&str, Option<Class>)] = &[
            // Public unicast: allowed.
            ("93.184.216.34", None),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001:82a::200e", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.167.255.255", None),
            ("169.253.255.255", None),
            ("223.255.255.255", None),
            // Unspecified and "this network".
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            // Loopback, whole block.
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("::1", Some(Loopback)),
            // Link-local, and the metadata services.
            ("169.254.0.1", Some(LinkLocal)),
            ("169.254.255.255", Some(LinkLocal)),
            ("169.254.169.254", Some(Metadata)),
            ("168.63.129.16", Some(Metadata)),
            ("100.100.100.200", Some(Metadata)),
            ("fd00:ec2::254", Some(Metadata)),
            ("fe80::1", Some(LinkLocal)),
            ("febf:ffff::1", Some(LinkLocal)),
            // Private: RFC 1918 (Service and pod CIDRs), unique local.
            ("10.0.0.1", Some(Private)),
            ("10.96.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("fec0::1", Some(Private)),
            // Shared address space (CGNAT, some clusters' pod ranges).
            ("100.64.0.1", Some(Shared)),
            ("100.127.255.255", Some(Shared)),
            // Multicast and broadcast.
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            // Reserved.
            ("240.0.0.1", Some(Reserved)),
            ("192.0.0.8", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("198.19.255.255", Some(Reserved)),
            ("100::1", Some(Reserved)),
            // IPv4 inside IPv6 is judged as the IPv4 address it reaches.
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(Metadata)),
            ("64:ff9b::808:808", None),
            ("2002:7f00:1::1", Some(Loopback)),
            ("2002:a00:1::1", Some(Private)),
            ("2002:808:808::1", None),
        ];
        for (addr, want) in cases {
            assert_eq!(classify(ip(addr)), *want, "{addr}");
        }
    }

    #[test]
    fn cluster_internal_names() {
        let cases = [
            ("hooks.slack.com", false),
            ("example.com", false),
            ("outlook.office.com.", false),
            ("kubernetes", true),
            ("localhost", true),
            ("localhost.", true),
            ("web.prod.svc", true),
            ("web.prod.svc.cluster.local", true),
            ("web.prod.svc.cluster.local.", true),
            ("WEB.PROD.SVC.CLUSTER.LOCAL", true),
            ("api.localhost", true),
            ("metadata.google.internal", true),
            ("printer.local", true),
            // Only the suffix counts.
            ("svc.example.com", false),
        ];
        for (host, internal) in cases {
            assert_eq!(cluster_internal_name(host), internal, "{host}");
        }
    }

    #[test]
    fn cidrs_parse_and_match() {
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.0/8", "127.0.0.1", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("127.0.0.0/8", "::ffff:127.0.0.9", true),
            ("10.96.0.0/12", "10.111.255.255", true),
            ("10.96.0.0/12", "10.112.0.0", false),
            ("192.168.1.10", "192.168.1.10", true),
            ("192.168.1.10", "192.168.1.11", false),
            ("0.0.0.0/0", "169.254.169.254", true),
            ("0.0.0.0/0", "::1", false),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fc00::1", false),
            ("::/0", "::1", true),
            ("::1/128", "::1", true),
        ];
        for (cidr, addr, inside) in cases {
            let c: Cidr = cidr.parse().unwrap();
            assert_eq!(c.contains(ip(addr)), *inside, "{cidr} {addr}");
        }
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/x",
            "host/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
        assert_eq!(
            EgressPolicy::parse_list(" 127.0.0.0/8, ::1/128 ,").unwrap(),
            EgressPolicy::allowing(vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()])
        );
        assert!(EgressPolicy::parse_list("127.0.0.0/8,nope").is_err());
        assert_eq!(
            EgressPolicy::parse_list("").unwrap(),
            EgressPolicy::default()
        );
    }

    #[test]
    fn policy_decisions() {
        let deny = EgressPolicy::default();
        let loopback = EgressPolicy::parse_list("127.0.0.0/8").unwrap();
        let cluster = EgressPolicy::parse_list("10.96.0.0/12").unwrap();
        type Case<'a> = (&'a str, &'a EgressPolicy, &'a str, &'a str, Option<Class>);
        let cases: &[Case] = &[
            (
                "public name, public address",
                &deny,
                "hooks.slack.com",
                "3.3.3.3",
                None,
            ),
            (
                "public name rebinding to metadata",
                &deny,
                "hooks.slack.com",
                "169.254.169.254",
                Some(Class::Metadata),
            ),
            (
                "public name to loopback",
                &deny,
                "evil.example.com",
                "127.0.0.1",
                Some(Class::Loopback),
            ),
            (
                "public name to a Service IP",
                &deny,
                "evil.example.com",
                "10.96.0.1",
                Some(Class::Private),
            ),
            (
                "cluster name to a public address",
                &deny,
                "web.prod.svc.cluster.local",
                "3.3.3.3",
                Some(Class::ClusterName),
            ),
            (
                "dotless name",
                &deny,
                "kubernetes",
                "3.3.3.3",
                Some(Class::ClusterName),
            ),
            (
                "loopback allowed",
                &loopback,
                "127.0.0.1",
                "127.0.0.1",
                None,
            ),
            (
                "loopback allow-list does not open metadata",
                &loopback,
                "x.example.com",
                "169.254.169.254",
                Some(Class::Metadata),
            ),
            (
                "allow-listed Service CIDR by name",
                &cluster,
                "hook.monitoring.svc.cluster.local",
                "10.100.0.7",
                None,
            ),
            (
                "allow-listed CIDR does not open other private ranges",
                &cluster,
                "hook.monitoring.svc",
                "10.200.0.7",
                Some(Class::ClusterName),
            ),
            (
                "allow-listed CIDR, public name, other private address",
                &cluster,
                "a.example.com",
                "192.168.0.1",
                Some(Class::Private),
            ),
        ];
        for (name, policy, host, addr, want) in cases {
            let got = policy.check(host, ip(addr)).err().map(|r| r.class);
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn filter_keeps_only_allowed_addresses() {
        let deny = EgressPolicy::default();
        assert_eq!(
            deny.filter("a.example.com", &[ip("127.0.0.1"), ip("3.3.3.3")]),
            Ok(vec![ip("3.3.3.3")])
        );
        let refusal = deny
            .filter("a.example.com", &[ip("169.254.169.254"), ip("10.0.0.1")])
            .unwrap_err();
        assert_eq!(refusal.class, Class::Metadata);
        assert_eq!(
            refusal.to_string(),
            "webhook target a.example.com refused: cloud metadata address (allow it with --webhook-allow-cidr)"
        );
        assert_eq!(
            deny.filter("a.example.com", &[]).unwrap_err().class,
            Class::Unresolved
        );
        assert!(deny.precheck_name("web.prod.svc").is_err());
        assert!(deny.precheck_name("hooks.slack.com").is_ok());
        let cluster = EgressPolicy::parse_list("10.0.0.0/8").unwrap();
        assert!(cluster.precheck_name("web.prod.svc").is_ok());
    }
}
