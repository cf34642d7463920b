//! Test hosts as network namespaces on one bridge, each with its own address (iproute2): a
//! partition is a host's link taken down, not a signal. Processes run inside a host with
//! `ip netns exec`; they may share the machine's Docker daemon (its socket is a file).
#![allow(dead_code)]

use std::process::Command;

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {} (namespaced hosts need root and iproute2)",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bridge with a /24 of its own; the machine itself is `.1` on it.
pub struct Net {
    bridge: String,
    pub prefix: String,
    tag: String,
    hosts: Vec<(String, String)>,
}

impl Net {
    pub fn new() -> Net {
        let n = std::process::id() % 200
            + (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                % 50);
        let tag = format!("{:x}", rand_u32() % 0xfffff);
        let prefix = format!("10.{}.{}", 180 + (n % 60), rand_u32() % 250 + 1);
        let bridge = format!("bb{tag}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        // Docker sets the FORWARD policy to DROP, and bridged traffic crosses iptables.
        iptables("-I", &bridge);
        Net {
            bridge,
            prefix,
            tag,
            hosts: vec![],
        }
    }

    /// The machine's own address on this network.
    pub fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// A new host `.n` (n ≥ 2) in its own namespace.
    pub fn host(&mut self, n: u8) -> Host {
        let ns = format!("berth-{}-{n}", self.tag);
        let outside = format!("vh{}{n}", self.tag);
        let inside = format!("vn{}{n}", self.tag);
        let addr = format!("{}.{n}", self.prefix);
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ]);
        ip(&["link", "set", &inside, "netns", &ns]);
        ip(&["link", "set", &outside, "master", &self.bridge, "up"]);
        ip(&[
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &inside,
        ]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", &inside, "up"]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        ip(&[
            "netns",
            "exec",
            &ns,
            "ip",
            "route",
            "add",
            "default",
            "via",
            &self.gateway(),
        ]);
        self.hosts.push((ns.clone(), outside.clone()));
        Host { ns, addr, outside }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (ns, outside) in &self.hosts {
            let _ = Command::new("ip").args(["link", "del", outside]).output();
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        iptables("-D", &self.bridge);
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

fn iptables(op: &str, bridge: &str) {
    let _ = Command::new("iptables")
        .args([op, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"])
        .output();
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u32::from_le_bytes(b)
}

pub struct Host {
    pub ns: String,
    /// This host's address.
    pub addr: String,
    outside: String,
}

impl Host {
    /// `program` run inside this host.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// Take this host's link down: nothing reaches it, it reaches nothing.
    pub fn cut(&self) {
        ip(&["link", "set", &self.outside, "down"]);
    }

    pub fn heal(&self) {
        ip(&["link", "set", &self.outside, "up"]);
    }
}
