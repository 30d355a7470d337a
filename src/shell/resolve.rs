//! Peer names resolved from the hosts file, with hickory-resolver.
//!
//! The hosts file is the overlay's name service: the layout renders it and
//! every node has the same one. It is re-read whenever its size, inode or
//! modification time changes, so an edited file is seen without a restart.
//! DNS is asked only when `node.dns_fallback` is on: a DNS outage must never
//! look like a dead peer.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::SystemTime;

use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Hosts, TokioResolver};

/// Why a name has no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The hosts file cannot be read.
    #[error("cannot read hosts file {path}: {reason}")]
    HostsFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The name is not in the hosts file (and DNS is off or failed).
    #[error(
        "{name} has no IPv4 address in {path}{dns}; add the block printed by `chainwatch hosts`"
    )]
    NotFound {
        /// The name.
        name: String,
        /// The hosts file.
        path: PathBuf,
        /// What DNS said, if asked.
        dns: String,
    },
    /// The name is not a valid DNS name.
    #[error("{0:?} is not a valid host name")]
    BadName(String),
}

#[derive(Default)]
struct Cached {
    stamp: Option<(u64, u64, SystemTime)>,
    hosts: Option<Hosts>,
}

/// Resolves names from a hosts file, re-reading it when it changes.
pub struct HostsResolver {
    path: PathBuf,
    cache: Mutex<Cached>,
    dns: Option<TokioResolver>,
}

impl HostsResolver {
    /// A resolver reading `path`; with `dns_fallback`, DNS (system config)
    /// answers names the file lacks.
    pub fn new(path: PathBuf, dns_fallback: bool) -> Result<Self, ResolveError> {
        let dns = if dns_fallback {
            let resolver = TokioResolver::builder_tokio()
                .and_then(|b| b.build())
                .map_err(|e| ResolveError::NotFound {
                    name: "(resolver)".into(),
                    path: path.clone(),
                    dns: format!(" (DNS resolver config: {e})"),
                })?;
            Some(resolver)
        } else {
            None
        };
        Ok(HostsResolver {
            path,
            cache: Mutex::new(Cached::default()),
            dns,
        })
    }

    /// The IPv4 address of `name`.
    pub async fn resolve(&self, name: &str) -> Result<Ipv4Addr, ResolveError> {
        let from_file = self.lookup_file(name)?;
        if let Some(addr) = from_file {
            return Ok(addr);
        }
        let mut dns = String::new();
        if let Some(resolver) = &self.dns {
            match resolver.lookup_ip(name).await {
                Ok(ips) => {
                    if let Some(addr) = ips.iter().find_map(|ip| match ip {
                        IpAddr::V4(a) => Some(a),
                        IpAddr::V6(_) => None,
                    }) {
                        return Ok(addr);
                    }
                    dns = " or DNS".into();
                }
                Err(e) => dns = format!(" (DNS: {e})"),
            }
        }
        Err(ResolveError::NotFound {
            name: name.to_string(),
            path: self.path.clone(),
            dns,
        })
    }

    fn lookup_file(&self, name: &str) -> Result<Option<Ipv4Addr>, ResolveError> {
        let io = |e: std::io::Error| ResolveError::HostsFile {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let meta = std::fs::metadata(&self.path).map_err(io)?;
        let stamp = (meta.ino(), meta.len(), meta.modified().map_err(io)?);
        // A poisoned lock only means another probe panicked mid-read; the
        // cache is rebuilt below anyway.
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.stamp != Some(stamp) || cache.hosts.is_none() {
            let mut hosts = Hosts::default();
            hosts
                .read_hosts_conf(File::open(&self.path).map_err(io)?)
                .map_err(io)?;
            cache.hosts = Some(hosts);
            cache.stamp = Some(stamp);
            tracing::debug!(path = %self.path.display(), "hosts file (re)loaded");
        }
        let qname = Name::from_str(name).map_err(|_| ResolveError::BadName(name.to_string()))?;
        let query = Query::query(qname, RecordType::A);
        let found = cache
            .hosts
            .as_ref()
            .and_then(|h| h.lookup_static_host(&query))
            .and_then(|lookup| {
                lookup
                    .answers()
                    .iter()
                    .find_map(|r| match r.data.ip_addr() {
                        Some(IpAddr::V4(a)) => Some(a),
                        _ => None,
                    })
            });
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_come_from_the_file_and_changes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(
            &path,
            "127.0.0.1 localhost\n192.168.21.11 frontend2.internal\n",
        )
        .unwrap();
        let r = HostsResolver::new(path.clone(), false).unwrap();
        assert_eq!(
            r.resolve("frontend2.internal").await.unwrap(),
            Ipv4Addr::new(192, 168, 21, 11)
        );
        let err = r.resolve("frontend3.internal").await.unwrap_err();
        assert!(err.to_string().contains("chainwatch hosts"), "{err}");
        // Rewrite (a new inode, as editors and `sed -i` do).
        let tmp = dir.path().join("hosts.new");
        std::fs::write(
            &tmp,
            "192.168.21.12 frontend2.internal frontend3.internal\n",
        )
        .unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(
            r.resolve("frontend2.internal").await.unwrap(),
            Ipv4Addr::new(192, 168, 21, 12)
        );
        assert_eq!(
            r.resolve("frontend3.internal").await.unwrap(),
            Ipv4Addr::new(192, 168, 21, 12)
        );
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            r.resolve("frontend2.internal").await,
            Err(ResolveError::HostsFile { .. })
        ));
    }
}
