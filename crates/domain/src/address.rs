//! Which network addresses a tenant's provider may make the server connect
//! to. A tenant admin chooses a provider's endpoint; without this policy the
//! server would connect wherever it is told: its own loopback services, the
//! cloud metadata endpoint, its own API. The policy is checked twice: on the
//! URL when a provider is saved (IP literals and `localhost` names), and on
//! every address a host name resolves to when a connection is opened (so DNS
//! rebinding cannot bypass it). Global providers, set by the platform admin,
//! are not restricted.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The address policy for tenant providers' endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allow_loopback: bool,
    /// The host's own interface addresses: reaching them reaches the host.
    host_addresses: Vec<IpAddr>,
    /// The server's own listen addresses (the API itself).
    listen: Vec<SocketAddr>,
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Loopback,
    LinkLocal,
    Unspecified,
    Multicast,
    HostAddress,
    ServerListenAddress,
    /// A host written in a numeric form other than a dotted quad
    /// (`2130706433`, `0x7f.1`), which resolvers read as an IPv4 address.
    NumericHost,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "a loopback address (localhost) is not allowed for a tenant provider",
            Self::LinkLocal => {
                "a link-local address (e.g. the cloud metadata service 169.254.169.254) is not allowed"
            }
            Self::Unspecified => "an unspecified or broadcast address is not allowed",
            Self::Multicast => "a multicast address is not allowed",
            Self::HostAddress => "an address of the server's own host is not allowed",
            Self::ServerListenAddress => "the server's own API address is not allowed",
            Self::NumericHost => {
                "a numeric host other than a dotted-quad IPv4 or bracketed IPv6 address is not allowed"
            }
        })
    }
}

impl std::error::Error for Refusal {}

impl AddressPolicy {
    /// The default policy: loopback refused, no host addresses known yet.
    pub fn new(allow_loopback: bool) -> Self {
        Self {
            allow_loopback,
            ..Self::default()
        }
    }

    /// Also refuse these addresses of the host (its network interfaces).
    /// Loopback interface addresses stay governed by `allow_loopback`.
    pub fn with_host_addresses(mut self, addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        self.host_addresses.extend(addresses);
        self
    }

    /// Also refuse the server's own listen address (always, even with loopback allowed).
    pub fn with_listen_address(mut self, addr: SocketAddr) -> Self {
        self.listen.push(addr);
        self
    }

    pub fn allows_loopback(&self) -> bool {
        self.allow_loopback
    }

    /// Whether a connection to `ip` (on `port`) is allowed.
    pub fn check_ip(&self, ip: IpAddr, port: u16) -> Result<(), Refusal> {
        let ip = canonical(ip);
        if self.is_listen_address(ip, port) {
            return Err(Refusal::ServerListenAddress);
        }
        if let Some(refusal) = special(ip) {
            return match refusal {
                Refusal::Loopback if self.allow_loopback => Ok(()),
                other => Err(other),
            };
        }
        if self.host_addresses.iter().any(|a| canonical(*a) == ip) && !self.allow_loopback {
            return Err(Refusal::HostAddress);
        }
        Ok(())
    }

    /// Check a URL host (as written in a URL: IPv6 in brackets) before any
    /// lookup: IP literals, numeric forms and `localhost` names. `Ok(true)`
    /// means the host is a name whose addresses must be checked when connecting.
    pub fn check_host(&self, host: &str, port: u16) -> Result<bool, Refusal> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.check_ip(ip, port).map(|()| false);
        }
        if is_numeric_ipv4_form(bare) {
            return Err(Refusal::NumericHost);
        }
        if is_localhost_name(bare) && !self.allow_loopback {
            return Err(Refusal::Loopback);
        }
        Ok(true)
    }

    /// Check an `http(s)://host[:port]/...` URL's host. Errors say why.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let (host, port) = url_host_port(url)?;
        self.check_host(host, port)
            .map(|_| ())
            .map_err(|r| r.to_string())
    }

    fn is_listen_address(&self, ip: IpAddr, port: u16) -> bool {
        self.listen.iter().any(|l| {
            let listen_ip = canonical(l.ip());
            l.port() == port
                && (listen_ip == ip
                    || (listen_ip.is_unspecified()
                        && (ip.is_loopback() || self.host_addresses.contains(&ip))))
        })
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The address classes never allowed (loopback unless allowed).
fn special(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<Refusal> {
    if ip.is_loopback() {
        Some(Refusal::Loopback)
    } else if ip.is_link_local() {
        Some(Refusal::LinkLocal)
    // 0.0.0.0/8 reaches the host itself on Linux.
    } else if ip.octets()[0] == 0 || ip.is_broadcast() {
        Some(Refusal::Unspecified)
    } else if ip.is_multicast() {
        Some(Refusal::Multicast)
    } else {
        None
    }
}

fn special_v6(ip: Ipv6Addr) -> Option<Refusal> {
    if ip.is_loopback() {
        Some(Refusal::Loopback)
    } else if ip.is_unspecified() {
        Some(Refusal::Unspecified)
    } else if ip.is_unicast_link_local() {
        Some(Refusal::LinkLocal)
    } else if ip.is_multicast() {
        Some(Refusal::Multicast)
    } else {
        None
    }
}

/// `localhost`, `localhost.` and any `*.localhost` name (RFC 6761).
fn is_localhost_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// What `inet_aton` would read as an IPv4 address although it is not a
/// dotted quad: one to four parts, each decimal, octal (`0…`) or hex (`0x…`).
fn is_numeric_ipv4_form(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = host.split('.').collect();
    parts.len() <= 4
        && parts.iter().all(|p| {
            let hex = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X"));
            match hex {
                Some(h) => h.chars().all(|c| c.is_ascii_hexdigit()),
                None => !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()),
            }
        })
}

/// The host (as written) and port of an `http(s)://` URL.
pub fn url_host_port(url: &str) -> Result<(&str, u16), String> {
    let (rest, default_port) = if let Some(r) = url.strip_prefix("https://") {
        (r, 443)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, 80)
    } else {
        return Err("must be an https:// (or http://) URL".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not contain user information (`user@`)".into());
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority
            .find(']')
            .ok_or("has an unterminated IPv6 address")?;
        (&authority[..=end], &authority[end + 1..])
    } else {
        match authority.rfind(':') {
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, ""),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err("has no host".into());
    }
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => default_port,
        Some(p) => p.parse().map_err(|_| "has an invalid port".to_string())?,
        None => return Err("has an invalid host".into()),
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> AddressPolicy {
        AddressPolicy::new(false)
            .with_host_addresses(["10.1.2.3".parse().unwrap()])
            .with_listen_address("127.0.0.1:8080".parse().unwrap())
    }

    #[test]
    fn special_addresses_are_refused() {
        let p = strict();
        let refused = [
            ("https://127.0.0.1:6443", Refusal::Loopback),
            ("https://127.8.9.10", Refusal::Loopback),
            ("https://[::1]:6443", Refusal::Loopback),
            ("https://[::ffff:127.0.0.1]", Refusal::Loopback),
            ("http://169.254.169.254/latest", Refusal::LinkLocal),
            ("https://[fe80::1]", Refusal::LinkLocal),
            ("https://[::ffff:169.254.169.254]", Refusal::LinkLocal),
            ("https://0.0.0.0:6443", Refusal::Unspecified),
            ("https://[::]:6443", Refusal::Unspecified),
            ("https://224.0.0.1", Refusal::Multicast),
            ("https://[ff02::1]", Refusal::Multicast),
            ("https://10.1.2.3:6443", Refusal::HostAddress),
            ("https://localhost:6443", Refusal::Loopback),
            ("https://LOCALHOST.", Refusal::Loopback),
            ("https://api.localhost", Refusal::Loopback),
            ("https://2130706433", Refusal::NumericHost),
            ("https://0x7f.1:6443", Refusal::NumericHost),
            ("https://127.1", Refusal::NumericHost),
        ];
        for (url, why) in refused {
            assert_eq!(p.check_url(url), Err(why.to_string()), "{url}");
        }
        for url in [
            "https://10.0.0.1:6443",
            "https://k8s.example.com",
            "https://[2001:db8::1]:6443",
            "https://cafe.be",
            "http://192.168.1.10:8080/",
        ] {
            assert_eq!(p.check_url(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn loopback_can_be_allowed_but_not_the_server_itself() {
        let p = AddressPolicy::new(true)
            .with_host_addresses(["10.1.2.3".parse().unwrap()])
            .with_listen_address("127.0.0.1:8080".parse().unwrap());
        assert!(p.check_url("https://127.0.0.1:6443").is_ok());
        assert!(p.check_url("https://localhost:6443").is_ok());
        assert!(p.check_url("https://10.1.2.3:6443").is_ok());
        assert_eq!(
            p.check_url("http://127.0.0.1:8080"),
            Err(Refusal::ServerListenAddress.to_string())
        );
        assert!(p.check_url("http://169.254.169.254").is_err());
        let any = AddressPolicy::new(true).with_listen_address("0.0.0.0:8080".parse().unwrap());
        assert!(any.check_url("http://127.0.0.2:8080").is_err());
        assert!(any.check_url("http://127.0.0.2:8081").is_ok());
    }

    #[test]
    fn host_names_are_left_to_connect_time() {
        let p = strict();
        assert_eq!(p.check_host("k8s.example.com", 443), Ok(true));
        assert_eq!(p.check_host("[2001:db8::1]", 443), Ok(false));
        assert_eq!(
            p.check_ip("::ffff:10.1.2.3".parse().unwrap(), 1),
            Err(Refusal::HostAddress)
        );
    }

    #[test]
    fn url_parsing() {
        assert_eq!(url_host_port("https://k:6443/x"), Ok(("k", 6443)));
        assert_eq!(url_host_port("http://k"), Ok(("k", 80)));
        assert_eq!(url_host_port("https://[::1]"), Ok(("[::1]", 443)));
        assert!(url_host_port("https://a@127.0.0.1").is_err());
        assert!(url_host_port("ftp://k").is_err());
        assert!(url_host_port("https://k:x").is_err());
        assert!(url_host_port("https://").is_err());
    }
}
