//! `chainwatch history`: role transitions read back from CloudWatch Logs.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{CmdError, settings};
use crate::layout::{Role, escaped};
use crate::shell::aws::cloudwatch;

/// Arguments of `history`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this role.
    #[arg(long)]
    pub role: Option<Role>,
    /// From this time: a duration ago (`90m`, `2h`, `7days`) or an RFC 3339
    /// time (`2026-11-22T10:00:00Z`).
    #[arg(long, value_name = "TIME", default_value = "7days")]
    pub since: String,
    /// Until this time (same forms); default: now.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Print JSON (one array of events) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Log group [default: announce.cloudwatch_log_group].
    #[arg(long, value_name = "GROUP")]
    pub log_group: Option<String>,
}

/// Parse `90m` (ago) or an RFC 3339 time into ms since the Unix epoch.
pub fn parse_time(text: &str, now: SystemTime) -> Result<i64, CmdError> {
    let t = if let Ok(d) = humantime::parse_duration(text) {
        now.checked_sub(d).unwrap_or(UNIX_EPOCH)
    } else {
        humantime::parse_rfc3339_weak(text).map_err(|_| {
            CmdError::Other(format!(
                "{text:?} is neither a duration (90m, 2h, 7days) nor an RFC 3339 time (2026-11-22T10:00:00Z)"
            ))
        })?
    };
    Ok(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64)
}

/// Read and print.
pub async fn main(config: Option<&Path>, args: &Args) -> Result<(), CmdError> {
    let s = settings(config)?;
    let group = args
        .log_group
        .clone()
        .unwrap_or_else(|| s.config.announce.cloudwatch_log_group.clone());
    if group.is_empty() {
        return Err(CmdError::Other(
            "no log group: set announce.cloudwatch_log_group or pass --log-group".into(),
        ));
    }
    let now = SystemTime::now();
    let start = parse_time(&args.since, now)?;
    let end = args
        .until
        .as_deref()
        .map(|u| parse_time(u, now))
        .transpose()?;
    let client = cloudwatch::client(
        s.config.aws.region.as_deref(),
        s.config.announce.timeout.max(Duration::from_millis(10_000)),
    )
    .await;
    let mut events = cloudwatch::history(&client, &group, (Some(start), end))
        .await
        .map_err(CmdError::Other)?;
    if let Some(role) = args.role {
        events.retain(|e| e.role == role);
    }
    if args.json {
        let text =
            serde_json::to_string_pretty(&events).map_err(|e| CmdError::Other(e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    println!(
        "{:<24} {:<8} {:>4} {:>4} {:>6} {:>11} {:<20} FENCED",
        "TIME (UTC)", "ROLE", "FROM", "TO", "EPOCH", "FAILOVER", "INSTANCE"
    );
    for e in &events {
        let when = humantime::format_rfc3339_millis(
            UNIX_EPOCH + Duration::from_millis(e.timings.identity_up_ms),
        );
        // Records come from CloudWatch: escape anything that could drive
        // the terminal.
        let fenced = if e.vacant {
            "(vacant)".to_string()
        } else {
            escaped(&e.fenced_instances.join(","))
        };
        println!(
            "{:<24} {:<8} {:>4} {:>4} {:>6} {:>8} ms {:<20} {}",
            when.to_string(),
            e.role.as_str(),
            e.from_id,
            e.to_id,
            e.epoch,
            e.failover_ms(),
            escaped(&e.instance_id),
            fenced
        );
    }
    if events.is_empty() {
        println!("(no transitions in {group} for this range)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_durations_ago_or_rfc3339() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            parse_time("2h", now).unwrap(),
            (1_800_000_000 - 7200) * 1000
        );
        assert_eq!(
            parse_time("2026-11-22T10:00:00Z", now).unwrap(),
            1_795_341_600_000
        );
        assert!(parse_time("yesterday", now).is_err());
    }
}
