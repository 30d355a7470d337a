//! The subcommands, one module each, and the command line that selects them.

pub mod ack;
pub mod assets;
pub mod broker_definitions;
pub mod client_connect;
pub mod config_check;
pub mod fleet;
pub mod history;
pub mod hosts;
pub mod iam_policy;
pub mod maint;
pub mod render_user_data;
pub mod run;
pub mod status;
pub mod switchover;
pub mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError, Settings};

/// chainwatch: an ordered-ID failover chain for a small EC2 fleet.
#[derive(Debug, Parser)]
#[command(name = "chainwatch", version, about, long_about = None)]
pub struct Cli {
    /// Config file [default: /etc/chainwatch/chainwatch.toml if present,
    /// else built-in defaults].
    #[arg(long, global = true, env = "CHAINWATCH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the watchdog daemon.
    Run(run::Args),
    /// OpenVPN client-connect hook: write the client's address to FILE.
    ClientConnect(client_connect::Args),
    /// OpenVPN tls-verify hook: refuse a client the hub does not admit.
    TlsVerify(client_connect::TlsVerifyArgs),
    /// Show what the local daemon is doing now.
    Status(status::Args),
    /// Show every instance of the fleet from EC2 and check the chain.
    Fleet(fleet::Args),
    /// Check the config, the PKI and the IAM permissions.
    #[command(subcommand)]
    Config(config_check::Action),
    /// Hold fences off an instance or the fleet for patching.
    #[command(subcommand)]
    Maint(maint::Action),
    /// Hand this node's ID over to its watcher without a fence (planned
    /// switchover; the hub included) and report the new holder and the
    /// overlay whole again.
    Switchover(switchover::Args),
    /// Let this node fence again after its fence budget held a fence.
    Ack(ack::Args),
    /// Write the shell completions and man pages (for packaging).
    #[command(hide = true)]
    GenerateAssets(assets::Args),
    /// Print the /etc/hosts block of the layout.
    Hosts(hosts::Args),
    /// Print the least-privilege IAM policy for the configured fleet.
    IamPolicy(iam_policy::Args),
    /// Print the RabbitMQ definitions (topology, least-privilege
    /// permissions) for `rabbitmqctl import_definitions`.
    BrokerDefinitions(broker_definitions::Args),
    /// Consume transition events and run the Ansible playbooks.
    Worker(worker::Args),
    /// Show role transitions from CloudWatch Logs.
    History(history::Args),
    /// Print the EC2 user-data (#cloud-config) of one instance.
    RenderUserData(render_user_data::Args),
}

/// Errors a command reports before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Anything else, already phrased for the operator.
    #[error("{0}")]
    Other(String),
}

/// Load the configuration for a command.
pub fn settings(cli_config: Option<&std::path::Path>) -> Result<Settings, ConfigError> {
    Config::load(cli_config, crate::config::process_env())
}

/// Parse the command line and run the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The hook runs synchronously, without a runtime or a logger: OpenVPN
        // blocks on it.
        Command::ClientConnect(args) => client_connect::main(cli.config.as_deref(), &args),
        Command::TlsVerify(args) => client_connect::tls_verify_main(cli.config.as_deref(), &args),
        Command::Hosts(args) => report(hosts::main(cli.config.as_deref(), &args)),
        Command::IamPolicy(args) => report(iam_policy::main(cli.config.as_deref(), &args)),
        Command::BrokerDefinitions(args) => {
            report(broker_definitions::main(cli.config.as_deref(), &args))
        }
        Command::RenderUserData(args) => {
            report(render_user_data::main(cli.config.as_deref(), &args))
        }
        Command::Status(args) => {
            exit_code(with_runtime(status::main(cli.config.as_deref(), &args)), 1)
        }
        Command::Run(args) => {
            init_logging(cli.log_format);
            report(with_runtime(run::main(cli.config.as_deref(), &args)))
        }
        Command::Worker(args) => {
            init_logging(cli.log_format);
            report(with_runtime(worker::main(cli.config.as_deref(), &args)))
        }
        Command::History(args) => report(with_runtime(history::main(cli.config.as_deref(), &args))),
        Command::GenerateAssets(args) => report(assets::main(&args)),
        Command::Switchover(args) => {
            report(with_runtime(switchover::main(cli.config.as_deref(), &args)))
        }
        Command::Ack(args) => report(ack::main(cli.config.as_deref(), &args)),
        Command::Maint(args) => report(with_runtime(maint::main(cli.config.as_deref(), &args))),
        Command::Config(args) => report(with_runtime(config_check::main(
            cli.config.as_deref(),
            &args,
        ))),
        Command::Fleet(args) => {
            let unknown = if args.check { 3 } else { 1 };
            exit_code(
                with_runtime(fleet::main(cli.config.as_deref(), &args)),
                // Nagios: UNKNOWN when the fleet could not be read.
                unknown,
            )
        }
    }
}

/// A command's own exit code, or `on_error` with the reason on stderr.
fn exit_code(result: Result<u8, CmdError>, on_error: u8) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("chainwatch: error: {e}");
            ExitCode::from(on_error)
        }
    }
}

/// Run `f` to completion on a current-thread runtime.
fn with_runtime<T, F: std::future::Future<Output = Result<T, CmdError>>>(
    f: F,
) -> Result<T, CmdError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CmdError::Other(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(f)
}

fn report(result: Result<(), CmdError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chainwatch: error: {e}");
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("CHAINWATCH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}
