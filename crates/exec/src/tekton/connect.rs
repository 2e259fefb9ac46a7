//! Connections to a tenant's cluster under the provider address policy.
//! Host names are resolved here and every address is checked before it is
//! connected to, so a name that resolves (or re-resolves: DNS rebinding) to
//! loopback, link-local or the server's own addresses is refused at connect
//! time, not only when the provider is saved. The kube client of a tenant's
//! provider and its HTTP/2 log connections both connect through [`connect`].

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::{TokioExecutor, TokioIo};
use imagefactory_domain::address::{AddressPolicy, Refusal};
use kube::client::ConfigExt;
use tokio::net::TcpStream;
use tower::{BoxError, ServiceBuilder};

use super::kube_metrics::KubeMetricsLayer;

/// A connection refused by the address policy (the error's category).
#[derive(Debug, thiserror::Error)]
#[error("address not allowed by the provider address policy: {0}")]
pub struct AddressRefused(pub Refusal);

/// The host name did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("DNS: host not found")]
pub struct HostNotFound;

/// Open a TCP connection to `host:port` (`host` as written in a URL) if the
/// policy allows the address; names are resolved and filtered here.
pub async fn connect(
    policy: &AddressPolicy,
    host: &str,
    port: u16,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, HostNotFound);
    for addr in resolve(policy, host, port).await? {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connection timed out"),
        }
    }
    Err(last)
}

/// The addresses of `host` the policy allows; an error when there is none.
async fn resolve(policy: &AddressPolicy, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let refused = |r: Refusal| io::Error::new(io::ErrorKind::PermissionDenied, AddressRefused(r));
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if !policy.check_host(host, port).map_err(refused)? {
        let ip: IpAddr = bare
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "invalid IP address"))?;
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::NotFound, HostNotFound))?
        .collect();
    let mut refusal = None;
    let allowed: Vec<SocketAddr> = found
        .into_iter()
        .filter(|a| match policy.check_ip(a.ip(), port) {
            Ok(()) => true,
            Err(r) => {
                refusal = Some(r);
                false
            }
        })
        .collect();
    match (allowed.is_empty(), refusal) {
        (false, _) => Ok(allowed),
        (true, Some(r)) => Err(refused(r)),
        (true, None) => Err(io::Error::new(io::ErrorKind::NotFound, HostNotFound)),
    }
}

/// A hyper connector that connects through [`connect`].
#[derive(Clone)]
pub struct PolicyConnector {
    policy: Arc<AddressPolicy>,
    timeout: Duration,
}

impl PolicyConnector {
    pub fn new(policy: Arc<AddressPolicy>, timeout: Duration) -> Self {
        Self { policy, timeout }
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

impl tower::Service<Uri> for PolicyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (policy, timeout) = (self.policy.clone(), self.timeout);
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL without a host"))?;
            let default_port = if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            };
            let port = uri.port_u16().unwrap_or(default_port);
            let stream = connect(&policy, host, port, timeout).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// A kube client for a tenant's provider: kube's own layers (base URI, auth,
/// headers) and TLS over a transport that connects only where the policy
/// allows. No proxy: tenant configs cannot set one.
pub fn policy_client(
    config: &kube::Config,
    policy: Arc<AddressPolicy>,
    metrics: KubeMetricsLayer,
) -> Result<kube::Client, kube::Error> {
    let connect_timeout = config.connect_timeout.unwrap_or(Duration::from_secs(10));
    let https = config
        .rustls_https_connector_with_connector(PolicyConnector::new(policy, connect_timeout))?;
    let mut timeouts = hyper_timeout::TimeoutConnector::new(https);
    timeouts.set_connect_timeout(config.connect_timeout);
    timeouts.set_read_timeout(config.read_timeout);
    timeouts.set_write_timeout(config.write_timeout);
    let http: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(timeouts);
    let service = ServiceBuilder::new()
        .layer(metrics)
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

/// The addresses of this host's network interfaces (getifaddrs), for the
/// policy's "the server's own host" rule. Empty when they cannot be listed.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we only read and
    // free once with freeifaddrs; each ifa_addr is a sockaddr of the family
    // it declares.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut current = list;
        while !current.is_null() {
            let addr = (*current).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        found.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        found.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            current = (*current).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_refused_at_connect_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let strict = AddressPolicy::new(false);
        for host in ["127.0.0.1", "[::ffff:127.0.0.1]", "localhost"] {
            let err = connect(&strict, host, port, Duration::from_secs(2))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{host}: {err}");
            assert!(err.to_string().contains("address policy"), "{host}: {err}");
        }
        let open = AddressPolicy::new(true);
        connect(&open, "127.0.0.1", port, Duration::from_secs(2))
            .await
            .unwrap();
        // A name that is not `localhost` but resolves to loopback (the
        // machine's own name, as /etc/hosts often has it) passes the URL
        // check and is refused once resolved.
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let name = name.trim();
        let resolved: Vec<SocketAddr> = match tokio::net::lookup_host((name, port)).await {
            Ok(found) => found.collect(),
            Err(_) => Vec::new(),
        };
        if !resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback()) {
            assert_eq!(strict.check_host(name, port), Ok(true));
            let err = connect(&strict, name, port, Duration::from_secs(2))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{name}: {err}");
        }
    }

    #[tokio::test]
    async fn the_host_s_own_addresses_are_refused() {
        let own = host_addresses();
        assert!(own.iter().any(IpAddr::is_loopback), "{own:?}");
        let policy = AddressPolicy::new(false).with_host_addresses(own.clone());
        for ip in own.iter().filter(|ip| !ip.is_loopback()) {
            assert!(policy.check_ip(*ip, 443).is_err(), "{ip}");
        }
    }
}
