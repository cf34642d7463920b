//! Compose's short port syntax: `[[HOST_IP:][HOST_PORT[-END]]:]CONTAINER_PORT[-END][/PROTOCOL]`
//! (`"8080"` publishes on a dynamic host port, `"80:8080"`, `"127.0.0.1:80:8080"`,
//! `"[::1]:80:8080"`, `"9000-9001:9000-9001/udp"`).

use crate::model::Protocol;

/// Ranges longer than this are refused (each port is one mapping).
const MAX_RANGE: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    pub host_ip: Option<String>,
    /// (container port, host port; None = dynamic).
    pub pairs: Vec<(u16, Option<u16>)>,
    pub protocol: Protocol,
}

pub fn protocol(p: &str) -> Result<Protocol, String> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        other => Err(format!(
            "protocol `{other}` is not supported (berth publishes tcp and udp)"
        )),
    }
}

/// `80` or `80-82`: first and last.
pub fn range(s: &str, what: &str) -> Result<(u16, u16), String> {
    let one = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "invalid {what} port `{p}`: must be a number from 1 to 65535"
            )),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if b < a {
                return Err(format!(
                    "invalid {what} port range `{s}`: the end is below the start"
                ));
            }
            if u32::from(b - a) >= MAX_RANGE {
                return Err(format!(
                    "{what} port range `{s}` is longer than {MAX_RANGE} ports"
                ));
            }
            Ok((a, b))
        }
        None => {
            let n = one(s)?;
            Ok((n, n))
        }
    }
}

/// Parse one short-syntax port entry.
pub fn parse_short(spec: &str) -> Result<Ports, String> {
    let wrap = |m: String| format!("bad port `{spec}`: {m}");
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, protocol(p).map_err(wrap)?),
        None => (spec, Protocol::Tcp),
    };
    let (host_ip, rest) = if let Some(r) = body.strip_prefix('[') {
        let (ip, tail) = r
            .split_once(']')
            .ok_or_else(|| wrap("an IPv6 address needs its closing `]`".into()))?;
        let tail = tail
            .strip_prefix(':')
            .ok_or_else(|| wrap("expected `:` after the host address".into()))?;
        (Some(ip.to_string()), tail)
    } else {
        (None, body)
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match (host_ip, parts.as_slice()) {
        (None, [c]) => (None, None, *c),
        (None, [h, c]) => (None, Some(*h), *c),
        (None, [ip, h, c]) => (Some(ip.to_string()), Some(*h), *c),
        (Some(ip), [h, c]) => (Some(ip), Some(*h), *c),
        _ => {
            return Err(wrap(
                "expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]".into(),
            ))
        }
    };
    if let Some(ip) = &ip {
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(wrap(format!("`{ip}` is not an IP address")));
        }
    }
    let (c0, c1) = range(container, "container").map_err(wrap)?;
    let host = host.filter(|h| !h.is_empty());
    let pairs = match host {
        None => (c0..=c1).map(|c| (c, None)).collect(),
        Some(h) => {
            let (h0, h1) = range(h, "host").map_err(wrap)?;
            if h1 - h0 != c1 - c0 {
                return Err(wrap(
                    "the host and container port ranges must be the same length (berth does not pick one host port of a range)".into(),
                ));
            }
            (c0..=c1).zip(h0..=h1).map(|(c, h)| (c, Some(h))).collect()
        }
    };
    Ok(Ports {
        host_ip: ip,
        pairs,
        protocol: proto,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_syntax() {
        let p = parse_short("8080").unwrap();
        assert_eq!(p.pairs, vec![(8080, None)]);
        assert_eq!(p.protocol, Protocol::Tcp);
        assert_eq!(
            parse_short("80:8080").unwrap().pairs,
            vec![(8080, Some(80))]
        );
        let p = parse_short("127.0.0.1:80:8080/udp").unwrap();
        assert_eq!(p.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(p.protocol, Protocol::Udp);
        assert_eq!(p.pairs, vec![(8080, Some(80))]);
        let p = parse_short("127.0.0.1::8080").unwrap();
        assert_eq!(p.pairs, vec![(8080, None)]);
        let p = parse_short("[::1]:80:8080").unwrap();
        assert_eq!(p.host_ip.as_deref(), Some("::1"));
        assert_eq!(
            parse_short("9000-9001:9100-9101").unwrap().pairs,
            vec![(9100, Some(9000)), (9101, Some(9001))]
        );
        assert_eq!(parse_short("7000-7001").unwrap().pairs.len(), 2);
        for bad in [
            "",
            "x",
            "0",
            "65536",
            "80:",
            "1:2:3:4",
            "80/sctp",
            "a:80:80",
            "9000-9001:80",
            "5-1",
            "1-1000",
            "[::1:80:80",
            "80:80/",
        ] {
            assert!(parse_short(bad).is_err(), "{bad:?} parsed");
        }
    }

    proptest! {
        #[test]
        fn host_container_pairs_round_trip(h in 1u16.., c in 1u16.., udp: bool) {
            let spec = format!("{h}:{c}{}", if udp { "/udp" } else { "" });
            let p = parse_short(&spec).unwrap();
            prop_assert_eq!(p.pairs, vec![(c, Some(h))]);
            prop_assert_eq!(p.protocol, if udp { Protocol::Udp } else { Protocol::Tcp });
        }

        #[test]
        fn never_panics(s in "[0-9:./a-z\\[\\]-]{0,24}") {
            let _ = parse_short(&s);
        }
    }
}
