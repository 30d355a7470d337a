//! `chainwatch broker-definitions`: the RabbitMQ definitions of the
//! topology, with least-privilege permissions for the nodes' and the
//! worker's broker users, as JSON for `rabbitmqctl import_definitions`.

use std::path::Path;

use super::{CmdError, settings};
use crate::shell::broker::Topology;

/// Arguments of `broker-definitions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The vhost [default: the one of the first `announce.rabbitmq_urls`,
    /// else `/`].
    #[arg(long)]
    pub vhost: Option<String>,
    /// A broker user the nodes publish as; repeat for each [default:
    /// `worker.publishers`].
    #[arg(long = "publisher", value_name = "USER")]
    pub publishers: Vec<String>,
    /// The broker user the worker consumes as.
    #[arg(long, value_name = "USER")]
    pub worker_user: String,
}

/// Print the definitions.
pub fn main(config: Option<&Path>, args: &Args) -> Result<(), CmdError> {
    let s = settings(config)?;
    let publishers = if args.publishers.is_empty() {
        s.config.worker.publishers.clone()
    } else {
        args.publishers.clone()
    };
    if publishers.is_empty() {
        return Err(CmdError::Other(
            "no publisher: name the nodes' broker users with --publisher, or set worker.publishers"
                .into(),
        ));
    }
    let vhost = match &args.vhost {
        Some(v) => v.clone(),
        None => s
            .config
            .announce
            .rabbitmq_urls
            .first()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| {
                let path = u.path().trim_start_matches('/');
                percent_encoding::percent_decode_str(path)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "/".into()),
    };
    for (what, name) in std::iter::once(("vhost", &vhost))
        .chain(std::iter::once(("worker user", &args.worker_user)))
        .chain(publishers.iter().map(|p| ("publisher", p)))
    {
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(CmdError::Other(format!(
                "the {what} {} is not a broker name (1 to 255 characters, no control character)",
                crate::layout::printable(name)
            )));
        }
    }
    if publishers.contains(&args.worker_user) {
        return Err(CmdError::Other(format!(
            "the worker user {} is also a publisher: give the worker its own broker user, so that it cannot publish events",
            crate::layout::printable(&args.worker_user)
        )));
    }
    let defs = Topology::from_config(&s.config.announce).definitions(
        &vhost,
        &publishers,
        &args.worker_user,
    );
    let text = serde_json::to_string_pretty(&defs).map_err(|e| CmdError::Other(e.to_string()))?;
    println!("{text}");
    Ok(())
}
