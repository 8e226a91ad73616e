//! Which outbound HTTP destinations a grant allows, and which addresses are
//! never reached unless the operator allows private networks.
//!
//! A pattern is `scheme://host[:port]`: scheme `http`, `https` or `*`; host
//! a name (`api.github.com`), `*` (any), `*.domain` (its subdomains), an IP
//! literal (`[::1]` for IPv6) or a CIDR block (`10.0.0.0/8`); port a number
//! or `*`, by default the scheme's (80, 443; both for `*`). No path, query,
//! fragment or userinfo, and no bare `*`: a grant names its scheme. Hosts
//! compare case-insensitively and a trailing dot is ignored. The grammar is
//! Spin's `allowed_outbound_hosts`, so packs move between the two.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// A host part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Any,
    Exact(String),
    /// `*.domain`: stored as `.domain`.
    Subdomains(String),
    Net(IpNet),
}

/// One allowed destination pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// `None`: any of http and https.
    scheme: Option<&'static str>,
    host: Host,
    /// `None`: any port; `Some(0)`: the scheme's default.
    port: Option<u16>,
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "http" { 80 } else { 443 }
}

/// Lowercase, without a trailing dot.
fn normal(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl Pattern {
    /// Parses one pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}` needs a scheme: `https://{text}`"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Some("http"),
            "https" => Some("https"),
            "*" => None,
            other => return Err(format!("scheme `{other}` is not http, https or *")),
        };
        if rest.contains(['/', '?', '#']) {
            return Err(format!(
                "`{text}` has a path, query or fragment; grant a host only"
            ));
        }
        if rest.contains('@') {
            return Err(format!("`{text}` has userinfo; grant a host only"));
        }
        // `[v6]:port`, `host:port`, `cidr` (whose `/` was refused above
        // unless escaped as part of the host: CIDR blocks are written
        // without a path, so a `/` in the host part is the prefix length).
        let (host, port) = split_port(rest)?;
        let host = if host == "*" {
            Host::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err(format!("`{text}`: `*.` needs a domain after it"));
            }
            Host::Subdomains(format!(".{}", normal(domain)))
        } else if host.contains('*') {
            return Err(format!(
                "`{text}`: `*` may only stand alone or as `*.domain`"
            ));
        } else if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Host::Net(IpNet::from(ip))
        } else if host.is_empty() {
            return Err(format!("`{text}` has no host"));
        } else {
            Host::Exact(normal(host))
        };
        Ok(Pattern { scheme, host, port })
    }

    /// Parses a CIDR host, the one form with a `/` (`http://10.0.0.0/8:8080`).
    fn parse_cidr(text: &str) -> Option<Result<Pattern, String>> {
        let (scheme, rest) = text.split_once("://")?;
        let (net, port) = match rest.rsplit_once(':') {
            Some((net, port)) if net.contains('/') && !port.contains('/') => (net, Some(port)),
            _ => (rest, None),
        };
        let net: IpNet = net.parse().ok()?;
        let mut pattern = match Pattern::parse(&format!("{scheme}://{}", net.addr())) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        pattern.host = Host::Net(net.trunc());
        pattern.port = match port {
            None => Some(0),
            Some("*") => None,
            Some(p) => match p.parse() {
                Ok(p) => Some(p),
                Err(_) => return Some(Err(format!("`{text}`: port `{p}` is not a number"))),
            },
        };
        Some(Ok(pattern))
    }

    fn allows(&self, scheme: &str, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
        if self.scheme.is_some_and(|s| s != scheme) {
            return false;
        }
        let port_ok = match self.port {
            None => true,
            Some(0) => port == default_port(scheme),
            Some(p) => p == port,
        };
        port_ok
            && match &self.host {
                Host::Any => true,
                // Names match names: `*.0.1` is no grant of `127.0.0.1`.
                Host::Exact(name) => ip.is_none() && name == host,
                Host::Subdomains(suffix) => ip.is_none() && host.ends_with(suffix.as_str()),
                Host::Net(net) => ip.is_some_and(|ip| net_allows(net, ip)),
            }
    }
}

/// Whether an address block of a grant covers `ip`. An IPv6 address that
/// embeds IPv4 addresses is matched by them: `https://::/0` grants IPv6
/// hosts, not every IPv4 host through `[::ffff:a.b.c.d]` or 6to4. Only a
/// block inside the embedding range itself (`64:ff9b::/96` for NAT64)
/// names such addresses on purpose and matches them as written.
fn net_allows(net: &IpNet, ip: IpAddr) -> bool {
    if let IpAddr::V6(v6) = ip
        && let Some(embedded) = embedded_ipv4(v6)
    {
        if embedding_block(v6).is_some_and(|block| block.contains(net)) {
            return net.contains(&ip);
        }
        return embedded.iter().all(|v4| net.contains(&IpAddr::V4(*v4)));
    }
    net.contains(&ip)
}

/// `host[:port]` with `[v6]` literals; the port is `Some(0)` when absent.
fn split_port(rest: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(end) = rest.strip_prefix('[').and_then(|r| r.find(']')) {
        let host = &rest[..end + 2];
        let tail = &rest[end + 2..];
        (host, tail.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (rest, None),
        }
    };
    let port = match port {
        None => Some(0),
        Some("*") => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("port `{p}` is not a number from 1 to 65535"))?,
        ),
    };
    Ok((host, port))
}

/// A pack's outbound HTTP grant: the patterns it may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<Pattern>);

impl AllowedHosts {
    /// Parses a grant; every bad pattern with its index.
    pub fn parse(patterns: &[String]) -> Result<AllowedHosts, Vec<(usize, String)>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (n, p) in patterns.iter().enumerate() {
            let parsed = Pattern::parse_cidr(p).unwrap_or_else(|| Pattern::parse(p));
            match parsed {
                Ok(p) => out.push(p),
                Err(e) => errors.push((n, e)),
            }
        }
        if errors.is_empty() {
            Ok(AllowedHosts(out))
        } else {
            Err(errors)
        }
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a request to `scheme://host:port` is allowed. `host` is a
    /// name or an IP literal (IPv6 with or without brackets).
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = normal(host.trim_start_matches('[').trim_end_matches(']'));
        let ip = host.parse::<IpAddr>().ok();
        let scheme = scheme.to_ascii_lowercase();
        self.0.iter().any(|p| p.allows(&scheme, &host, ip, port))
    }
}

/// The IPv4 addresses an IPv6 address stands for, when it is one of the
/// forms that embed them: a packet to it reaches (or is translated to) the
/// IPv4 host, so it is judged by that host. Teredo embeds two (its server
/// and, inverted, its client), both reachable; every other form one.
///
/// - IPv4-mapped `::ffff:a.b.c.d` (`::ffff:0:0/96`) and IPv4-compatible
///   `::a.b.c.d` (`::/96`, deprecated, still routed by some stacks);
/// - IPv4-translated `::ffff:0:a.b.c.d` (`::ffff:0:0:0/96`, SIIT);
/// - NAT64's well-known prefix `64:ff9b::a.b.c.d` (`64:ff9b::/96`);
/// - 6to4 `2002:AABB:CCDD::/48` (`2002::/16`);
/// - Teredo `2001:0:SSSS:SSSS:…:CCCC:CCCC` (`2001::/32`).
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Vec<Ipv4Addr>> {
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0xffff | 0, ..]
        | [0, 0, 0, 0, 0xffff, 0, ..]
        | [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(vec![v4(s[6], s[7])]),
        [0x2002, ..] => Some(vec![v4(s[1], s[2])]),
        [0x2001, 0, ..] => Some(vec![v4(s[2], s[3]), v4(!s[6], !s[7])]),
        _ => None,
    }
}

/// The block an embedding form occupies, for an address that has one
/// (see [`embedded_ipv4`]).
fn embedding_block(v6: Ipv6Addr) -> Option<IpNet> {
    let s = v6.segments();
    let block = match s {
        [0, 0, 0, 0, 0, 0xffff, ..] => "::ffff:0:0/96",
        [0, 0, 0, 0, 0, 0, ..] => "::/96",
        [0, 0, 0, 0, 0xffff, 0, ..] => "::ffff:0:0:0/96",
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => "64:ff9b::/96",
        [0x2002, ..] => "2002::/16",
        [0x2001, 0, ..] => "2001::/32",
        _ => return None,
    };
    block.parse().ok()
}

/// Whether `ip` is one the host refuses to reach unless private networks
/// are allowed: loopback, private, link-local (cloud metadata included),
/// shared (CGNAT), benchmarking, multicast, broadcast, unspecified,
/// documentation, site-local, discard-only and unique-local ranges. An IPv6
/// address that embeds IPv4 addresses (mapped, compatible, translated,
/// NAT64, 6to4, Teredo) is private when any of them is: otherwise
/// `[::127.0.0.1]` or `[2002:a9fe:a9fe::]` would reach loopback or the
/// metadata service past the check.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b & 0xfe) == 18)
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(embedded) = embedded_ipv4(v6) {
                return embedded.into_iter().any(|v4| is_private(IpAddr::V4(v4)));
            }
            let [first, second, third, fourth, ..] = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                // Link-local fe80::/10 and the deprecated site-local fec0::/10.
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || (first == 0x2001 && second == 0x0db8)
                // Discard-only 100::/64.
                || (first == 0x100 && second == 0 && third == 0 && fourth == 0)
                // The rest of 64:ff9b::/32, NAT64's local-use 64:ff9b:1::/48
                // among it: where the IPv4 address sits depends on the
                // network's own prefix length, so it cannot be checked.
                || (first == 0x64 && second == 0xff9b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(p: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_hosts_match_their_scheme_and_default_port_case_insensitively() {
        let g = grant(&["https://api.github.com"]);
        assert!(g.allows("https", "api.github.com", 443));
        assert!(
            g.allows("HTTPS", "API.GitHub.com.", 443),
            "case and trailing dot"
        );
        assert!(!g.allows("http", "api.github.com", 80), "another scheme");
        assert!(!g.allows("https", "api.github.com", 8443), "another port");
        assert!(!g.allows("https", "evil.api.github.com", 443));
        assert!(!g.allows("https", "api.github.com.evil.com", 443));
    }

    #[test]
    fn wildcards_cover_subdomains_ports_and_schemes() {
        let g = grant(&["https://*.slack.com", "*://example.org:*", "http://*:8080"]);
        assert!(g.allows("https", "hooks.slack.com", 443));
        assert!(
            !g.allows("https", "slack.com", 443),
            "*.domain is subdomains only"
        );
        assert!(g.allows("http", "example.org", 1234));
        assert!(g.allows("https", "example.org", 443));
        assert!(g.allows("http", "anything.test", 8080));
        assert!(!g.allows("http", "anything.test", 80));
    }

    #[test]
    fn ip_literals_and_cidr_blocks_match_addresses() {
        let g = grant(&[
            "http://10.0.0.0/8:8080",
            "http://127.0.0.1:*",
            "https://[::1]",
        ]);
        assert!(g.allows("http", "10.1.2.3", 8080));
        assert!(!g.allows("http", "10.1.2.3", 80));
        assert!(!g.allows("http", "11.0.0.1", 8080));
        assert!(g.allows("http", "127.0.0.1", 4000));
        assert!(g.allows("https", "[::1]", 443));
        assert!(g.allows("https", "::1", 443));
        assert!(
            !g.allows("http", "localhost", 4000),
            "a name is not its address"
        );
    }

    #[test]
    fn bad_patterns_are_refused_with_their_index() {
        let bad: Vec<String> = [
            "*",
            "api.github.com",
            "https://api.github.com/repos",
            "https://user:pw@api.github.com",
            "https://api.github.com?x=1",
            "ftp://example.com",
            "https://exa*mple.com",
            "https://example.com:0",
            "https://example.com:http",
            "https://",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let errors = AllowedHosts::parse(&bad).unwrap_err();
        assert_eq!(
            errors.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            (0..bad.len()).collect::<Vec<_>>(),
            "{errors:?}"
        );
        assert!(AllowedHosts::parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_private() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "ff02::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "140.82.112.3", "2606:4700:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
    /// Each IPv6 form that embeds an IPv4 address, with a public embedded
    /// address (reachable) and private, loopback and metadata ones (not).
    #[test]
    fn ipv6_addresses_that_embed_ipv4_are_judged_by_the_ipv4_address() {
        let table: &[(&str, &str, &[&str], bool)] = &[
            // (form, address, embedded addresses, private)
            ("compatible", "::1.1.1.1", &["1.1.1.1"], false),
            ("compatible", "::127.0.0.1", &["127.0.0.1"], true),
            (
                "compatible",
                "::169.254.169.254",
                &["169.254.169.254"],
                true,
            ),
            ("compatible", "::10.0.0.1", &["10.0.0.1"], true),
            ("mapped", "::ffff:1.1.1.1", &["1.1.1.1"], false),
            ("mapped", "::ffff:127.0.0.1", &["127.0.0.1"], true),
            (
                "mapped",
                "::ffff:169.254.169.254",
                &["169.254.169.254"],
                true,
            ),
            ("translated", "::ffff:0:1.1.1.1", &["1.1.1.1"], false),
            ("translated", "::ffff:0:127.0.0.1", &["127.0.0.1"], true),
            (
                "translated",
                "::ffff:0:169.254.169.254",
                &["169.254.169.254"],
                true,
            ),
            ("translated", "::ffff:0:192.168.1.1", &["192.168.1.1"], true),
            ("nat64", "64:ff9b::1.1.1.1", &["1.1.1.1"], false),
            ("nat64", "64:ff9b::127.0.0.1", &["127.0.0.1"], true),
            ("nat64", "64:ff9b::a9fe:a9fe", &["169.254.169.254"], true),
            ("6to4", "2002:101:101::1", &["1.1.1.1"], false),
            ("6to4", "2002:7f00:1::1", &["127.0.0.1"], true),
            ("6to4", "2002:a9fe:a9fe::", &["169.254.169.254"], true),
            ("6to4", "2002:c0a8:101:5::1", &["192.168.1.1"], true),
            // Teredo: server 65.54.227.120, client stored inverted.
            (
                "teredo",
                "2001:0:4136:e378:8000:63bf:fefe:fefe",
                &["65.54.227.120", "1.1.1.1"],
                false,
            ),
            (
                "teredo",
                "2001:0:4136:e378:8000:63bf:80ff:fffe",
                &["65.54.227.120", "127.0.0.1"],
                true,
            ),
            (
                "teredo",
                "2001:0:4136:e378::5601:5601",
                &["65.54.227.120", "169.254.169.254"],
                true,
            ),
            (
                "teredo",
                "2001:0:a00:1:8000:63bf:fefe:fefe",
                &["10.0.0.1", "1.1.1.1"],
                true,
            ),
        ];
        for (form, address, embedded, private) in table {
            let v6: Ipv6Addr = address.parse().unwrap();
            let want: Vec<Ipv4Addr> = embedded.iter().map(|a| a.parse().unwrap()).collect();
            assert_eq!(embedded_ipv4(v6), Some(want), "{form} {address}");
            assert_eq!(is_private(IpAddr::V6(v6)), *private, "{form} {address}");
        }
        // Local-use NAT64 hides its IPv4 address where only its network
        // knows: never reachable.
        for address in ["64:ff9b:1::101:101", "64:ff9b:1:101:100:100::"] {
            assert!(is_private(address.parse().unwrap()), "{address}");
        }
        // Ordinary global addresses embed nothing.
        for address in ["2606:4700:4700::1111", "2a00:1450:4001::200e"] {
            assert_eq!(embedded_ipv4(address.parse().unwrap()), None, "{address}");
            assert!(!is_private(address.parse().unwrap()), "{address}");
        }
    }

    #[test]
    fn a_grant_matches_an_embedded_ipv4_address_by_that_address() {
        // Every IPv6 host is no grant of every IPv4 host.
        let v6 = grant(&["http://::/0:*"]);
        assert!(v6.allows("http", "[2606:4700:4700::1111]", 80));
        for address in [
            "[::ffff:10.0.0.1]",
            "[::10.0.0.1]",
            "[::ffff:0:10.0.0.1]",
            "[64:ff9b::10.0.0.1]",
            "[2002:a00:1::1]",
            "[2001:0:4136:e378:8000:63bf:f5ff:fffe]",
        ] {
            assert!(!v6.allows("http", address, 80), "{address}");
        }
        // A grant of an IPv4 block covers the same hosts written as IPv6.
        let v4 = grant(&["http://10.0.0.0/8:*"]);
        assert!(v4.allows("http", "[::ffff:10.0.0.1]", 80));
        assert!(v4.allows("http", "[2002:a00:1::1]", 80));
        assert!(!v4.allows("http", "[::ffff:11.0.0.1]", 80));
        assert!(!v4.allows("http", "[2002:b00:1::1]", 80));
        // A grant of the embedding range itself is taken as written.
        let nat64 = grant(&["https://64:ff9b::/96"]);
        assert!(nat64.allows("https", "[64:ff9b::1.1.1.1]", 443));
        assert!(!nat64.allows("https", "1.1.1.1", 443));
        // Names match names, never addresses.
        let name = grant(&["http://*.0.1:*"]);
        assert!(!name.allows("http", "127.0.0.1", 80));
        assert!(!name.allows("http", "[::ffff:127.0.0.1]", 80));
    }
}
