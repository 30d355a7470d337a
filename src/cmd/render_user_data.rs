//! `chainwatch render-user-data --role R --id N`: the EC2 user-data of one
//! instance, with the config given by `--config` embedded.

use std::path::{Path, PathBuf};

use super::{CmdError, settings};
use crate::cloudinit::{self, Sources};
use crate::layout::Role;

/// Arguments of `render-user-data`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The instance's role.
    #[arg(long)]
    pub role: Role,
    /// Its initial ID.
    #[arg(long)]
    pub id: u32,
    /// Where the instance downloads the chainwatch .deb: s3://... or
    /// https://...; omit when it is baked into the image.
    #[arg(long)]
    pub package_url: Option<String>,
    /// Where it gets its OpenVPN PKI: ssm:/prefix (SecureString parameters
    /// <prefix>/ca.crt, <prefix>/<cn>.crt, <prefix>/<cn>.key, optional
    /// <prefix>/ta.key), s3://bucket/prefix/ (the vpn.pki_dir layout), or
    /// baked.
    #[arg(long, default_value = crate::iam::DEFAULT_PKI_SOURCE)]
    pub pki_source: String,
    /// Template [default: the one built into chainwatch, a copy of
    /// cloud-init/user-data.yaml.tmpl].
    #[arg(long)]
    pub template: Option<PathBuf>,
}

/// Render and print.
pub fn main(config: Option<&Path>, args: &Args) -> Result<(), CmdError> {
    let s = settings(config)?;
    let slot = s
        .layout
        .slot(args.role, args.id)
        .map_err(|e| CmdError::Other(e.to_string()))?;
    let text = match &args.template {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| CmdError::Other(format!("{}: {e}", p.display())))?,
        None => cloudinit::TEMPLATE.to_string(),
    };
    let out = cloudinit::render(
        &text,
        &s,
        slot,
        &Sources {
            package_url: args.package_url.clone(),
            pki: args.pki_source.clone(),
        },
    )
    .map_err(|e| CmdError::Other(e.to_string()))?;
    if cloudinit::without_secrets(&s.config).1 {
        eprintln!(
            "the broker password is not in this user-data: the node reads it from {} (announce.rabbitmq_password_file), fetched at boot from {}/broker.password{}",
            cloudinit::BROKER_PASSWORD_FILE,
            args.pki_source.trim_end_matches('/'),
            if args.pki_source == "baked" {
                " (baked: put it in the image, mode 600)"
            } else {
                " (store it there: an SSM SecureString, or an S3 object)"
            }
        );
    }
    print!("{out}");
    Ok(())
}
