//! The client address of a request behind proxies (`--trusted-proxies`).
//!
//! `X-Forwarded-For` and `X-Real-IP` are written by whoever sent the request, so they are only
//! believed when the TCP peer is a trusted proxy. Then the client is the right-most
//! `X-Forwarded-For` hop that is not itself a trusted proxy: every hop to its right was appended
//! by a proxy we trust, while anything to its left may be forged by the client. When every hop is
//! trusted, the left-most one is the best we know. Without `X-Forwarded-For`, `X-Real-IP` is used.
//!
//! A request may carry several `X-Forwarded-For` lines (HAProxy's `option forwardfor` adds one
//! rather than appending); they are one list, in order, so a line the client sent cannot hide the
//! hops the proxies added after it. A hop that does not parse stops the walk: nothing left of it
//! can be attributed, so the client is unknown and any allow-list refuses it.

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

/// Where a request came from, as far as trusted proxies tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The client; `None` when a forwarded hop cannot be read (fails any allow-list).
    pub client: Option<IpAddr>,
    /// The client, else the last trusted address on the way: whom to throttle and audit.
    pub nearest: IpAddr,
}

/// Where a request that arrived from `peer` came from.
pub fn client_ip(peer: IpAddr, headers: &dyn RequestHeaders, trusted: &[IpNet]) -> Origin {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let known = |ip| Origin {
        client: Some(ip),
        nearest: ip,
    };
    if !is_trusted(&peer) {
        return known(peer);
    }
    let lines = headers.get_all("x-forwarded-for");
    if !lines.is_empty() {
        let mut last_trusted = peer;
        for hop in lines
            .iter()
            .rev()
            .flat_map(|line| line.rsplit(|b| *b == b','))
        {
            let Some(ip) = std::str::from_utf8(hop).ok().and_then(parse_hop) else {
                return Origin {
                    client: None,
                    nearest: last_trusted,
                };
            };
            if !is_trusted(&ip) {
                return known(ip);
            }
            last_trusted = ip;
        }
        return known(last_trusted);
    }
    known(
        headers
            .get("x-real-ip")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(parse_hop)
            .unwrap_or(peer),
    )
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
            self.get_all(name).first().copied()
        }
        fn get_all(&self, name: &str) -> Vec<&[u8]> {
            self.0
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes())
                .collect()
        }
    }

    /// The client address, asserting it is known.
    fn known(peer: &str, h: &H) -> IpAddr {
        let origin = client_ip(ip(peer), h, &trusted());
        assert_eq!(origin.client, Some(origin.nearest), "{origin:?}");
        origin.nearest
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
        assert_eq!(known("203.0.113.9", &h), ip("203.0.113.9"));
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, &[]).client,
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn trusted_peer_right_most_untrusted_hop() {
        // The client forged 6.6.6.6; 198.51.100.7 is who connected to our first proxy.
        let h = H(vec![("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]);
        assert_eq!(known("10.2.2.2", &h), ip("198.51.100.7"));
        assert_eq!(known("192.0.2.1", &h), ip("198.51.100.7"));
    }

    #[test]
    fn all_hops_trusted_takes_the_left_most() {
        let h = H(vec![("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
        assert_eq!(known("10.2.2.2", &h), ip("10.9.9.9"));
    }

    #[test]
    fn real_ip_ports_and_mapped_addresses() {
        let h = H(vec![("x-real-ip", "198.51.100.7")]);
        assert_eq!(known("10.2.2.2", &h), ip("198.51.100.7"));
        let h = H(vec![(
            "x-forwarded-for",
            "[2001:db8::5]:443, 198.51.100.8:1234",
        )]);
        assert_eq!(known("10.2.2.2", &h), ip("198.51.100.8"));
        let h = H(vec![("x-forwarded-for", "::ffff:198.51.100.9")]);
        assert_eq!(known("::ffff:10.2.2.2", &h), ip("198.51.100.9"));
    }

    #[test]
    fn every_forwarded_for_line_counts_in_order() {
        // The client sent the first line; HAProxy added the second with the client's address.
        let h = H(vec![
            ("x-forwarded-for", "192.0.2.200, 10.9.9.9"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(known("10.2.2.2", &h), ip("198.51.100.7"));
        let h = H(vec![
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-for", "10.9.9.9, 10.1.1.1"),
        ]);
        assert_eq!(known("10.2.2.2", &h), ip("198.51.100.7"));
    }

    #[test]
    fn a_hop_that_does_not_parse_stops_the_walk() {
        // Skipping "unknown" would take the forged 198.51.100.7 for the client.
        let h = H(vec![("x-forwarded-for", "198.51.100.7, unknown, 10.1.1.1")]);
        let origin = client_ip(ip("10.2.2.2"), &h, &trusted());
        assert_eq!(
            origin,
            Origin {
                client: None,
                nearest: ip("10.1.1.1")
            }
        );
        let h = H(vec![("x-forwarded-for", "garbage")]);
        let origin = client_ip(ip("::ffff:10.2.2.2"), &h, &trusted());
        assert_eq!(
            origin,
            Origin {
                client: None,
                nearest: ip("10.2.2.2")
            }
        );
        let h = H(vec![
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-for", "1.2.3.4.5"),
        ]);
        assert_eq!(client_ip(ip("10.2.2.2"), &h, &trusted()).client, None);
    }

    #[test]
    fn bad_trusted_proxy_is_an_error() {
        assert!(parse_trusted(&["10.0.0.0/33".into()]).is_err());
        assert_eq!(parse_trusted(&[" ".into()]).unwrap(), Vec::<IpNet>::new());
    }
}
