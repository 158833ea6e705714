//! The client address of a request behind proxies (`--trusted-proxies`).
//!
//! `X-Forwarded-For` and `X-Real-IP` are written by whoever sent the request, so they are only
//! believed when the TCP peer is a trusted proxy. Then the client is the right-most
//! `X-Forwarded-For` hop that is not itself a trusted proxy: every hop to its right was appended
//! by a proxy we trust, while anything to its left may be forged by the client. When every hop is
//! trusted, the left-most one is the best we know. Without `X-Forwarded-For`, `X-Real-IP` is used.

use std::net::IpAddr;

use ipnet::IpNet;

use super::decision::RequestHeaders;

/// Parse `--trusted-proxies`: CIDRs or single addresses.
pub fn parse_trusted(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not a CIDR or an IP address"))
        })
        .collect()
}

/// The client address of a request that arrived from `peer`.
pub fn client_ip(peer: IpAddr, headers: &dyn RequestHeaders, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    if let Some(xff) = headers
        .get("x-forwarded-for")
        .and_then(|v| std::str::from_utf8(v).ok())
    {
        let hops: Vec<IpAddr> = xff.split(',').filter_map(parse_hop).collect();
        if let Some(client) = hops.iter().rev().find(|ip| !is_trusted(ip)) {
            return *client;
        }
        if let Some(first) = hops.first() {
            return *first;
        }
    }
    headers
        .get("x-real-ip")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(parse_hop)
        .unwrap_or(peer)
}

/// One hop: an address, possibly with a port (`1.2.3.4:5678`, `[2001:db8::1]:443`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct H(Vec<(&'static str, &'static str)>);
    impl RequestHeaders for H {
        fn get(&self, name: &str) -> Option<&[u8]> {
            self.0
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes())
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted() -> Vec<IpNet> {
        parse_trusted(&["10.0.0.0/8".into(), "192.0.2.1".into()]).unwrap()
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let h = H(vec![
            ("x-forwarded-for", "1.1.1.1"),
            ("x-real-ip", "2.2.2.2"),
        ]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, &trusted()),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("203.0.113.9"), &h, &[]), ip("203.0.113.9"));
    }

    #[test]
    fn trusted_peer_right_most_untrusted_hop() {
        // The client forged 6.6.6.6; 198.51.100.7 is who connected to our first proxy.
        let h = H(vec![("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]);
        assert_eq!(
            client_ip(ip("10.2.2.2"), &h, &trusted()),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(ip("192.0.2.1"), &h, &trusted()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn all_hops_trusted_takes_the_left_most() {
        let h = H(vec![("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
        assert_eq!(client_ip(ip("10.2.2.2"), &h, &trusted()), ip("10.9.9.9"));
    }

    #[test]
    fn real_ip_ports_mapped_addresses_and_garbage() {
        let h = H(vec![("x-real-ip", "198.51.100.7")]);
        assert_eq!(
            client_ip(ip("10.2.2.2"), &h, &trusted()),
            ip("198.51.100.7")
        );
        let h = H(vec![(
            "x-forwarded-for",
            "[2001:db8::5]:443, 198.51.100.8:1234",
        )]);
        assert_eq!(
            client_ip(ip("10.2.2.2"), &h, &trusted()),
            ip("198.51.100.8")
        );
        let h = H(vec![("x-forwarded-for", "garbage, unknown")]);
        assert_eq!(
            client_ip(ip("::ffff:10.2.2.2"), &h, &trusted()),
            ip("10.2.2.2")
        );
    }

    #[test]
    fn bad_trusted_proxy_is_an_error() {
        assert!(parse_trusted(&["10.0.0.0/33".into()]).is_err());
        assert_eq!(parse_trusted(&[" ".into()]).unwrap(), Vec::<IpNet>::new());
    }
}
