//! The chain layout: the single source of truth that maps a role and an ID to
//! the VPN common name, the host name and the overlay address.
//!
//! Every other part of chainwatch asks this module: the `client-connect` hook,
//! the `/etc/hosts` block, the prober's target names, the boot identity and the
//! rejoin rule. Nothing else computes an address.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest common name the hook accepts. `frontend` + three digits is 11; the
/// limit leaves room without letting a hostile value through.
pub const MAX_COMMON_NAME_LEN: usize = 16;

/// The two chains chainwatch keeps.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum Role {
    /// OpenVPN server (ID 1) and clients; frontend1 owns the public address.
    Frontend,
    /// MySQL primary (ID 1) and replicas.
    Backend,
}

impl Role {
    /// Both roles, in a fixed order.
    pub const ALL: [Role; 2] = [Role::Frontend, Role::Backend];

    /// The lowercase name used in common names, tags and routing keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Frontend => "frontend",
            Role::Backend => "backend",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = LayoutError;

    /// Strict: only the exact lowercase names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "frontend" => Ok(Role::Frontend),
            "backend" => Ok(Role::Backend),
            other => Err(LayoutError::UnknownRole(printable(other))),
        }
    }
}

/// One position in a chain: a role and an ID (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Slot {
    /// Which chain.
    pub role: Role,
    /// Position in the chain; 1 is the head.
    pub id: u32,
}

impl Slot {
    /// A slot; no range check (see [`Layout::slot`] for a checked one).
    pub const fn new(role: Role, id: u32) -> Self {
        Slot { role, id }
    }

    /// The VPN common name, e.g. `frontend3`.
    pub fn common_name(&self) -> String {
        format!("{}{}", self.role, self.id)
    }

    /// The slot this one watches: ID n watches n-1; ID 1 watches nobody.
    pub fn predecessor(&self) -> Option<Slot> {
        (self.id > 1).then(|| Slot::new(self.role, self.id - 1))
    }

    /// The slot that watches this one (n+1), whether or not anyone holds
    /// it or the layout has it.
    pub fn watcher(&self) -> Option<Slot> {
        self.id.checked_add(1).map(|id| Slot::new(self.role, id))
    }

    /// True for frontend1, the VPN hub.
    pub fn is_hub(&self) -> bool {
        self.role == Role::Frontend && self.id == 1
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.role, self.id)
    }
}

/// Errors of the layout and of names checked against it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The role is neither `frontend` nor `backend`.
    #[error("unknown role {0:?}: use `frontend` or `backend`")]
    UnknownRole(String),
    /// The ID is 0, not a number, has leading zeros or is past the maximum.
    #[error("bad ID {id:?} for {role}: use a decimal number from 1 to {max} without leading zeros")]
    BadId {
        /// The role the ID was meant for.
        role: Role,
        /// The offending text, made printable.
        id: String,
        /// The layout's maximum for this role.
        max: u32,
    },
    /// The common name is empty.
    #[error("common name is empty")]
    EmptyName,
    /// The common name is longer than [`MAX_COMMON_NAME_LEN`].
    #[error("common name is {0} bytes long; at most {MAX_COMMON_NAME_LEN} are accepted")]
    NameTooLong(usize),
    /// The common name contains something other than lowercase letters and digits.
    #[error("common name {0:?} has characters other than a-z and 0-9")]
    BadCharacters(String),
    /// The common name is not `<role><id>`.
    #[error("common name {0:?} is not <frontend|backend><id>")]
    Malformed(String),
    /// `frontend1` is the server's own name and never a client.
    #[error(
        "common name frontend1 is the VPN server's own identity and cannot connect as a client"
    )]
    ServerName,
    /// The subnet text is not `a.b.c.d/len`.
    #[error("subnet {0:?} is not an IPv4 network like 192.168.21.0/24")]
    BadSubnet(String),
    /// An address would fall outside the subnet or on its network/broadcast address.
    #[error(
        "{slot} would get host number {host} which is outside the usable range 1..={max} of {subnet}; change the layout offsets or the subnet"
    )]
    OutsideSubnet {
        /// The slot whose address is out of range.
        slot: Slot,
        /// Its host number.
        host: u64,
        /// The highest usable host number.
        max: u64,
        /// The subnet.
        subnet: String,
    },
    /// Two slots would share an address.
    #[error(
        "{a} and {b} would both get {addr}; change the layout offsets so the ranges do not overlap"
    )]
    Overlap {
        /// One slot.
        a: Slot,
        /// The other slot.
        b: Slot,
        /// The shared address.
        addr: Ipv4Addr,
    },
    /// A role has no IDs at all.
    #[error("max_ids for {0} must be at least 1")]
    NoIds(Role),
}

/// An IPv4 network, parsed from `a.b.c.d/len` (ipnet), with the rules a
/// chain needs: a prefix from /8 to /30 and no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet(ipnet::Ipv4Net);

impl Subnet {
    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        self.0.network()
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.0.prefix_len()
    }

    /// The dotted netmask, as OpenVPN's `ifconfig-push` wants it.
    pub fn netmask(&self) -> Ipv4Addr {
        self.0.netmask()
    }

    /// Highest usable host number (excludes network and broadcast).
    pub fn max_host(&self) -> u64 {
        u64::from(u32::from(self.0.broadcast()) - u32::from(self.0.network())).saturating_sub(1)
    }

    /// Whether `addr` lies in this network.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.0.contains(&addr)
    }
}

impl FromStr for Subnet {
    type Err = LayoutError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LayoutError::BadSubnet(printable(s));
        let net: ipnet::Ipv4Net = s.parse().map_err(|_| bad())?;
        // A chain needs at least a handful of addresses; /30 is the smallest
        // network with two usable hosts. Host bits set are a typo.
        if !(8..=30).contains(&net.prefix_len()) || net.trunc() != net {
            return Err(bad());
        }
        Ok(Subnet(net))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The numbers that define a layout, as they appear in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LayoutConfig {
    /// The overlay network.
    pub subnet: String,
    /// Domain appended to common names to form host names.
    pub domain: String,
    /// Host number of frontend1 (the VPN server).
    pub frontend_hub: u32,
    /// frontend n>1 gets host number `frontend_base + n - 1`.
    pub frontend_base: u32,
    /// backend n gets host number `backend_base + n - 1`.
    pub backend_base: u32,
    /// Highest frontend ID.
    pub max_frontends: u32,
    /// Highest backend ID.
    pub max_backends: u32,
    /// The public address (Elastic IP) clients use for frontend1, if any;
    /// `chainwatch hosts` adds a `frontend1` line for it.
    pub public_address: Option<Ipv4Addr>,
}

impl Default for LayoutConfig {
    fn default() -> Self {
        LayoutConfig {
            subnet: "192.168.21.0/24".into(),
            domain: "internal".into(),
            frontend_hub: 1,
            frontend_base: 10,
            backend_base: 100,
            max_frontends: 5,
            max_backends: 5,
            public_address: None,
        }
    }
}

/// A validated layout. Build it with [`Layout::new`]; every address it hands
/// out is inside the subnet and unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    subnet: Subnet,
    domain: String,
    frontend_hub: u32,
    frontend_base: u32,
    backend_base: u32,
    max_frontends: u32,
    max_backends: u32,
    public_address: Option<Ipv4Addr>,
}

impl Default for Layout {
    fn default() -> Self {
        // The default configuration is valid; the unit tests prove it.
        Layout::new(&LayoutConfig::default()).expect("default layout is valid")
    }
}

impl Layout {
    /// Validate a layout: the subnet parses, every slot's address is a usable
    /// host of the subnet, and no two slots share an address.
    pub fn new(cfg: &LayoutConfig) -> Result<Self, LayoutError> {
        let subnet: Subnet = cfg.subnet.parse()?;
        for (role, max) in [
            (Role::Frontend, cfg.max_frontends),
            (Role::Backend, cfg.max_backends),
        ] {
            if max == 0 {
                return Err(LayoutError::NoIds(role));
            }
        }
        let layout = Layout {
            subnet,
            domain: cfg.domain.clone(),
            frontend_hub: cfg.frontend_hub,
            frontend_base: cfg.frontend_base,
            backend_base: cfg.backend_base,
            max_frontends: cfg.max_frontends,
            max_backends: cfg.max_backends,
            public_address: cfg.public_address,
        };
        let mut seen: Vec<(u64, Slot)> = Vec::new();
        for slot in layout.all_slots() {
            let host = layout.host_number(slot);
            if host == 0 || host > subnet.max_host() {
                return Err(LayoutError::OutsideSubnet {
                    slot,
                    host,
                    max: subnet.max_host(),
                    subnet: subnet.to_string(),
                });
            }
            if let Some((_, other)) = seen.iter().find(|(h, _)| *h == host) {
                return Err(LayoutError::Overlap {
                    a: *other,
                    b: slot,
                    addr: layout.addr_of_host(host),
                });
            }
            seen.push((host, slot));
        }
        Ok(layout)
    }

    /// The overlay subnet.
    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The host-name domain (`internal` by default).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The configured public address of frontend1.
    pub fn public_address(&self) -> Option<Ipv4Addr> {
        self.public_address
    }

    /// The highest ID of a role.
    pub fn max_id(&self, role: Role) -> u32 {
        match role {
            Role::Frontend => self.max_frontends,
            Role::Backend => self.max_backends,
        }
    }

    /// A checked slot: the ID is within 1..=max for the role.
    pub fn slot(&self, role: Role, id: u32) -> Result<Slot, LayoutError> {
        if id == 0 || id > self.max_id(role) {
            return Err(LayoutError::BadId {
                role,
                id: id.to_string(),
                max: self.max_id(role),
            });
        }
        Ok(Slot::new(role, id))
    }

    /// Every slot of the layout, frontends first.
    pub fn all_slots(&self) -> impl Iterator<Item = Slot> + '_ {
        Role::ALL
            .into_iter()
            .flat_map(move |role| (1..=self.max_id(role)).map(move |id| Slot::new(role, id)))
    }

    /// The host name of a slot, e.g. `frontend3.internal`.
    pub fn host_name(&self, slot: Slot) -> String {
        format!("{}.{}", slot.common_name(), self.domain)
    }

    /// The overlay address of a slot.
    pub fn overlay_addr(&self, slot: Slot) -> Ipv4Addr {
        self.addr_of_host(self.host_number(slot))
    }

    /// The slot that owns an overlay address, if any.
    pub fn slot_of_addr(&self, addr: Ipv4Addr) -> Option<Slot> {
        self.all_slots().find(|s| self.overlay_addr(*s) == addr)
    }

    /// The witness every non-hub prober asks: frontend1's host name.
    pub fn witness_host(&self) -> String {
        self.host_name(Slot::new(Role::Frontend, 1))
    }

    fn host_number(&self, slot: Slot) -> u64 {
        let id = u64::from(slot.id);
        match slot.role {
            Role::Frontend if slot.id == 1 => u64::from(self.frontend_hub),
            Role::Frontend => u64::from(self.frontend_base) + id - 1,
            Role::Backend => u64::from(self.backend_base) + id - 1,
        }
    }

    fn addr_of_host(&self, host: u64) -> Ipv4Addr {
        // host <= max_host < 2^32 after validation; the sum stays in range.
        Ipv4Addr::from(u32::from(self.subnet.network()).wrapping_add(host as u32))
    }

    /// Parse a common name strictly against this layout: exactly
    /// `<frontend|backend><id>`, lowercase, no leading zeros, ID in range.
    pub fn parse_common_name(&self, name: &str) -> Result<Slot, LayoutError> {
        if name.is_empty() {
            return Err(LayoutError::EmptyName);
        }
        if name.len() > MAX_COMMON_NAME_LEN {
            return Err(LayoutError::NameTooLong(name.len()));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(LayoutError::BadCharacters(printable(name)));
        }
        let split = name
            .find(|c: char| c.is_ascii_digit())
            .ok_or_else(|| LayoutError::Malformed(name.to_string()))?;
        let (role, id) = name.split_at(split);
        let role: Role = role.parse()?;
        let id = self.parse_id(role, id)?;
        Ok(Slot::new(role, id))
    }

    /// Parse a decimal ID strictly: digits only, no sign, no leading zero,
    /// 1..=max for the role.
    pub fn parse_id(&self, role: Role, text: &str) -> Result<u32, LayoutError> {
        let bad = || LayoutError::BadId {
            role,
            id: printable(text),
            max: self.max_id(role),
        };
        if text.is_empty() || text.len() > 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if text.starts_with('0') {
            return Err(bad());
        }
        let id: u32 = text.parse().map_err(|_| bad())?;
        self.slot(role, id).map_err(|_| bad())?;
        Ok(id)
    }

    /// The slot of a VPN client: a valid common name that is not the server's.
    pub fn parse_client_common_name(&self, name: &str) -> Result<Slot, LayoutError> {
        let slot = self.parse_common_name(name)?;
        if slot.is_hub() {
            return Err(LayoutError::ServerName);
        }
        Ok(slot)
    }

    /// The OpenVPN `client-connect` answer for a client slot.
    pub fn ifconfig_push(&self, slot: Slot) -> String {
        format!(
            "ifconfig-push {} {}\n",
            self.overlay_addr(slot),
            self.subnet.netmask()
        )
    }

    /// The `/etc/hosts` block for the whole layout, between markers so a
    /// provisioning tool can replace it in place.
    pub fn hosts_block(&self) -> String {
        let mut out = String::from("# BEGIN chainwatch hosts (generated by `chainwatch hosts`)\n");
        for slot in self.all_slots() {
            out.push_str(&format!(
                "{}\t{}\n",
                self.overlay_addr(slot),
                self.host_name(slot)
            ));
        }
        if let Some(public) = self.public_address {
            out.push_str(&format!("{public}\tfrontend1\n"));
        }
        out.push_str("# END chainwatch hosts\n");
        out
    }

    /// The ID a rejoining instance takes: the lowest free ID above every ID
    /// currently held by a running instance of its role (the tail), or `None`
    /// when the chain is full.
    pub fn tail_id(&self, role: Role, held: &[u32]) -> Option<u32> {
        let top = held.iter().copied().max().unwrap_or(0);
        let id = top + 1;
        (id <= self.max_id(role)).then_some(id)
    }
}

/// Make a value from outside safe for a terminal, whole: control
/// characters (terminal escapes, newlines, C1 controls) are shown escaped,
/// everything else as it is.
pub fn escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Make a value safe to print on one log line: control characters and
/// non-ASCII are escaped, and the result is cut to 64 characters.
pub fn printable(s: &str) -> String {
    let escaped: String = s.escape_default().collect();
    if escaped.chars().count() > 64 {
        let cut: String = escaped.chars().take(64).collect();
        format!("{cut}...")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_keeps_text_and_defuses_controls() {
        assert_eq!(escaped("i-0abc frontend2 ü"), "i-0abc frontend2 ü");
        let e = escaped("x\u{1b}[2J\ny\u{9b}31m");
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert_eq!(e, "x\\u{1b}[2J\\ny\\u{9b}31m");
    }

    fn fe(id: u32) -> Slot {
        Slot::new(Role::Frontend, id)
    }
    fn be(id: u32) -> Slot {
        Slot::new(Role::Backend, id)
    }

    #[test]
    fn default_layout_matches_design_table() {
        let l = Layout::default();
        assert_eq!(l.overlay_addr(fe(1)), Ipv4Addr::new(192, 168, 21, 1));
        assert_eq!(l.overlay_addr(fe(2)), Ipv4Addr::new(192, 168, 21, 11));
        assert_eq!(l.overlay_addr(fe(5)), Ipv4Addr::new(192, 168, 21, 14));
        assert_eq!(l.overlay_addr(be(1)), Ipv4Addr::new(192, 168, 21, 100));
        assert_eq!(l.overlay_addr(be(3)), Ipv4Addr::new(192, 168, 21, 102));
        assert_eq!(l.subnet().netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(l.host_name(be(2)), "backend2.internal");
        assert_eq!(fe(3).common_name(), "frontend3");
        assert_eq!(l.all_slots().count(), 10);
        assert_eq!(l.slot_of_addr(Ipv4Addr::new(192, 168, 21, 12)), Some(fe(3)));
        assert_eq!(l.slot_of_addr(Ipv4Addr::new(192, 168, 21, 50)), None);
    }

    #[test]
    fn predecessor_and_hub() {
        assert_eq!(fe(3).predecessor(), Some(fe(2)));
        assert_eq!(be(1).predecessor(), None);
        assert_eq!(be(1).watcher(), Some(be(2)));
        assert_eq!(Slot::new(Role::Backend, u32::MAX).watcher(), None);
        assert!(fe(1).is_hub());
        assert!(!be(1).is_hub());
    }

    #[test]
    fn common_names_are_parsed_strictly() {
        let l = Layout::default();
        assert_eq!(l.parse_common_name("frontend3"), Ok(fe(3)));
        assert_eq!(l.parse_common_name("backend5"), Ok(be(5)));
        assert_eq!(l.parse_client_common_name("backend1"), Ok(be(1)));
        let bad = [
            "",
            "frontend",
            "frontend0",
            "frontend6",
            "frontend02",
            "Frontend2",
            "FRONTEND2",
            "frontend2 ",
            " frontend2",
            "frontend2\n",
            "front\0end2",
            "frontend-2",
            "frontend+2",
            "../frontend2",
            "frontend2/x",
            "database2",
            "2frontend",
            "frontend2x",
            "frontend99999999999999999",
            "frontend4294967297",
            "bäckend2",
        ];
        for name in bad {
            assert!(l.parse_common_name(name).is_err(), "{name:?} accepted");
        }
        assert_eq!(
            l.parse_client_common_name("frontend1"),
            Err(LayoutError::ServerName)
        );
    }

    #[test]
    fn error_messages_are_one_printable_line() {
        let l = Layout::default();
        let err = l
            .parse_common_name("x\n\u{1b}[31m")
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\n') && !err.contains('\u{1b}'), "{err}");
    }

    #[test]
    fn overlapping_layouts_and_layouts_outside_the_subnet_are_rejected() {
        let kind = |e: &LayoutError| match e {
            LayoutError::Overlap { .. } => "overlap",
            LayoutError::OutsideSubnet { .. } => "outside",
            _ => "other",
        };
        let d = LayoutConfig::default;
        for (cfg, want) in [
            (
                LayoutConfig {
                    frontend_base: 99,
                    ..d()
                },
                "overlap",
            ),
            (
                LayoutConfig {
                    frontend_hub: 11,
                    ..d()
                },
                "overlap",
            ),
            (
                LayoutConfig {
                    backend_base: 252,
                    ..d()
                },
                "outside",
            ),
            (
                LayoutConfig {
                    frontend_hub: 0,
                    ..d()
                },
                "outside",
            ),
        ] {
            let err = Layout::new(&cfg).unwrap_err();
            assert_eq!(kind(&err), want, "{cfg:?}: {err}");
        }
        for subnet in ["192.168.21.1/24", "192.168.21.0", "10.0.0.0/31", "x/24"] {
            let cfg = LayoutConfig {
                subnet: subnet.into(),
                ..LayoutConfig::default()
            };
            assert!(
                matches!(Layout::new(&cfg), Err(LayoutError::BadSubnet(_))),
                "{subnet}"
            );
        }
    }

    #[test]
    fn a_different_subnet_moves_every_address() {
        let cfg = LayoutConfig {
            subnet: "10.8.0.0/16".into(),
            backend_base: 1000,
            max_backends: 3,
            ..LayoutConfig::default()
        };
        let l = Layout::new(&cfg).unwrap();
        assert_eq!(l.overlay_addr(be(1)), Ipv4Addr::new(10, 8, 3, 232));
        assert_eq!(l.subnet().netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert!(l.parse_common_name("backend4").is_err());
        assert!(
            l.all_slots()
                .all(|s| l.subnet().contains(l.overlay_addr(s)))
        );
    }

    #[test]
    fn ifconfig_push_and_hosts_block() {
        let mut cfg = LayoutConfig::default();
        let l = Layout::new(&cfg).unwrap();
        assert_eq!(
            l.ifconfig_push(fe(2)),
            "ifconfig-push 192.168.21.11 255.255.255.0\n"
        );
        let block = l.hosts_block();
        assert!(block.contains("192.168.21.1\tfrontend1.internal\n"));
        assert!(block.contains("192.168.21.104\tbackend5.internal\n"));
        assert!(!block.contains("\tfrontend1\n"));
        cfg.public_address = Some(Ipv4Addr::new(203, 0, 113, 7));
        let l = Layout::new(&cfg).unwrap();
        assert!(l.hosts_block().contains("203.0.113.7\tfrontend1\n"));
    }

    #[test]
    fn tail_id_is_the_lowest_free_id_above_the_live_ones() {
        let l = Layout::default();
        assert_eq!(l.tail_id(Role::Frontend, &[1, 2, 3]), Some(4));
        assert_eq!(l.tail_id(Role::Frontend, &[1, 3]), Some(4));
        assert_eq!(l.tail_id(Role::Frontend, &[]), Some(1));
        assert_eq!(l.tail_id(Role::Backend, &[1, 2, 3, 4, 5]), None);
    }
}
