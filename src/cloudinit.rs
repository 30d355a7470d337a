//! User-data for EC2 instances: one `#cloud-config` document per instance,
//! rendered from `cloud-init/user-data.yaml.tmpl` for a role and an ID. It
//! carries chainwatch's index line, installs the package, writes the config
//! and the `/etc/hosts` block, fetches the OpenVPN PKI (SSM Parameter Store,
//! S3, or baked into the image), allows unprivileged ICMP and enables the
//! daemon; backends also get MariaDB configured for GTID replication.

use crate::config::Settings;
use crate::layout::{Role, Slot};
use crate::template::{self, indent};
use crate::userdata;

/// The template shipped with chainwatch (used unless `--template` is given).
pub const TEMPLATE: &str = include_str!("../cloud-init/user-data.yaml.tmpl");

/// EC2's limit on user-data.
pub const MAX_USER_DATA: usize = 16 * 1024;

/// Errors rendering user-data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The template is broken.
    #[error("user-data template: {0}")]
    Template(#[from] template::TemplateError),
    /// Too big for EC2.
    #[error(
        "rendered user-data is {0} bytes; EC2 accepts at most {MAX_USER_DATA}: shorten the config or fetch it at boot"
    )]
    TooBig(usize),
    /// A bad option.
    #[error("{0}")]
    Option(String),
}

/// Where the instance gets what is not in the user-data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// The Debian package: `s3://...`, `https://...`, or `None` when it is
    /// baked into the image.
    pub package_url: Option<String>,
    /// The PKI: `ssm:/prefix`, `s3://bucket/prefix/`, or `baked`.
    pub pki: String,
}

fn install_command(url: Option<&str>) -> Result<String, RenderError> {
    Ok(match url {
        None => "dpkg -s chainwatch >/dev/null || { echo 'chainwatch is not installed and no --package-url was given' >&2; exit 1; }".to_string(),
        Some(u) if u.starts_with("s3://") => format!(
            "aws --region $(cloud-init query region) s3 cp {u} /tmp/chainwatch.deb && apt-get install -y /tmp/chainwatch.deb"
        ),
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
            format!("curl -fsSL -o /tmp/chainwatch.deb {u} && apt-get install -y /tmp/chainwatch.deb")
        }
        Some(u) => {
            return Err(RenderError::Option(format!(
                "--package-url {u:?}: use s3://, https:// or http://"
            )));
        }
    })
}

/// Where a node keeps the broker password that `render` keeps out of the
/// user-data: fetched with the PKI, from `<source>/broker.password`.
pub const BROKER_PASSWORD_FILE: &str = "/etc/chainwatch/pki/broker.password";

/// The config as the user-data embeds it: no broker URL carries a
/// password; when one did, or `announce.rabbitmq_password_file` is set,
/// the node reads the password from [`BROKER_PASSWORD_FILE`], fetched at
/// boot with the PKI. The second value says whether a password file is
/// to be fetched.
pub fn without_secrets(config: &crate::config::Config) -> (crate::config::Config, bool) {
    let mut c = config.clone();
    let mut moved = c.announce.rabbitmq_password_file.is_some();
    for url in &mut c.announce.rabbitmq_urls {
        if let Ok(mut u) = url::Url::parse(url)
            && u.password().is_some()
            && u.set_password(None).is_ok()
        {
            *url = u.to_string();
            moved = true;
        }
    }
    if moved {
        c.announce.rabbitmq_password_file = Some(BROKER_PASSWORD_FILE.into());
    }
    (c, moved)
}

/// Render the user-data of `slot`.
pub fn render(
    template_text: &str,
    settings: &Settings,
    slot: Slot,
    sources: &Sources,
) -> Result<String, RenderError> {
    let pki_ok = sources.pki == "baked"
        || sources.pki.starts_with("ssm:/")
        || sources.pki.starts_with("s3://");
    if !pki_ok || sources.pki.contains(['"', '\'', ' ', '$', '`']) {
        return Err(RenderError::Option(format!(
            "--pki-source {:?}: use ssm:/prefix, s3://bucket/prefix/ or baked",
            sources.pki
        )));
    }
    if let Some(u) = &sources.package_url
        && u.contains(['"', '\'', ' ', '$', '`', ';', '&', '|'])
    {
        return Err(RenderError::Option(format!(
            "--package-url {u:?} contains shell characters"
        )));
    }
    let layout = &settings.layout;
    let names: Vec<String> = (1..=layout.max_id(slot.role))
        .map(|id| Slot::new(slot.role, id).common_name())
        .collect();
    let s3_includes = names
        .iter()
        .map(|cn| format!("--include issued/{cn}.crt --include private/{cn}.key"))
        .collect::<Vec<_>>()
        .join(" ");
    let (embedded, broker_password) = without_secrets(&settings.config);
    let config = toml::to_string(&embedded)
        .map_err(|e| RenderError::Option(format!("serializing the config: {e}")))?;
    let vars: Vec<(&str, String)> = vec![
        ("index_line", userdata::index_line(slot)),
        ("common_name", slot.common_name()),
        ("config", indent(&config, 6)),
        ("hosts_block", indent(&layout.hosts_block(), 6)),
        ("pki_source", sources.pki.clone()),
        ("common_names", names.join(" ")),
        ("s3_includes", s3_includes),
        (
            "install_package",
            install_command(sources.package_url.as_deref())?,
        ),
        ("server_id", (100 + slot.id).to_string()),
        (
            "read_only",
            if slot.id == 1 { "OFF" } else { "ON" }.to_string(),
        ),
    ];
    let flags = [
        ("backend", slot.role == Role::Backend),
        ("frontend", slot.role == Role::Frontend),
        ("broker_password", broker_password),
    ];
    let out = template::render(template_text, &vars, &flags)?;
    if out.len() > MAX_USER_DATA {
        return Err(RenderError::TooBig(out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::layout::Layout;

    fn settings() -> Settings {
        Settings {
            config: Config::default(),
            layout: Layout::default(),
            source: None,
        }
    }

    #[test]
    fn rendered_user_data_carries_the_index_and_the_role_parts() {
        let s = settings();
        let src = Sources {
            package_url: Some("s3://bucket/chainwatch_0.1.0_amd64.deb".into()),
            pki: "ssm:/chainwatch/pki".into(),
        };
        for slot in [Slot::new(Role::Frontend, 1), Slot::new(Role::Backend, 3)] {
            let out = render(TEMPLATE, &s, slot, &src).unwrap();
            assert!(out.starts_with("#cloud-config\n"));
            assert_eq!(userdata::parse(out.as_bytes(), &s.layout), Ok(slot));
            assert_eq!(out.contains("mariadb-server"), slot.role == Role::Backend);
            assert!(out.contains("      192.168.21.100\tbackend1.internal"));
            assert!(out.len() < MAX_USER_DATA);
        }
        assert!(!out_has_password_fetch(&s, &src));
        let b3 = render(TEMPLATE, &s, Slot::new(Role::Backend, 3), &src).unwrap();
        assert!(b3.contains("server_id = 103") && b3.contains("read_only = ON"));
        assert!(b3.contains("for cn in backend1 backend2 backend3 backend4 backend5; do"));
    }

    fn out_has_password_fetch(s: &Settings, src: &Sources) -> bool {
        render(TEMPLATE, s, Slot::new(Role::Frontend, 2), src)
            .unwrap()
            .contains("get broker.password")
    }

    #[test]
    fn the_broker_password_never_reaches_the_user_data() {
        let mut s = settings();
        s.config.announce.rabbitmq_urls = vec![
            "amqps://cw:hunter2%40x@mq.internal:5671/prod".into(),
            "amqps://cw:hunter2%40x@mq2.internal/prod".into(),
        ];
        for pki in ["ssm:/chainwatch/pki", "s3://bucket/pki/", "baked"] {
            let src = Sources {
                package_url: None,
                pki: pki.into(),
            };
            let out = render(TEMPLATE, &s, Slot::new(Role::Backend, 2), &src).unwrap();
            assert!(!out.contains("hunter2"), "{pki}: {out}");
            assert!(out.contains("amqps://cw@mq.internal:5671/prod"));
            assert!(out.contains(&format!(
                "rabbitmq_password_file = \"{BROKER_PASSWORD_FILE}\""
            )));
            // Fetched with the PKI, from SSM or S3 (baked: put there by
            // the image).
            assert!(out.contains("get broker.password \"$dir/broker.password\""));
            assert!(out.contains("--include broker.password"));
            assert!(out.contains("chmod 600 \"$dir/broker.password\""));
        }
        // The operator's config is not changed.
        assert!(s.config.announce.rabbitmq_urls[0].contains("hunter2"));
    }

    #[test]
    fn bad_sources_are_refused() {
        let s = settings();
        let slot = Slot::new(Role::Frontend, 2);
        for (pkg, pki) in [
            (None, "ftp://x"),
            (Some("ftp://x/y.deb"), "baked"),
            (Some("https://x/y.deb; rm -rf /"), "baked"),
            (None, "ssm:/a b"),
        ] {
            let src = Sources {
                package_url: pkg.map(str::to_string),
                pki: pki.into(),
            };
            assert!(render(TEMPLATE, &s, slot, &src).is_err(), "{pkg:?} {pki}");
        }
    }
}
