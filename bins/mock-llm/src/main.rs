//! `quorum-mock-llm`: runs the mock LLM server until SIGINT or SIGTERM.
#![expect(
    clippy::print_stdout,
    reason = "a binary: prints its address for scripts and --help for people"
)]

use std::io::Write as _;

use anyhow::Context as _;
use quorum_config::{Loader, ProcessEnv};
use quorum_mock_llm::{MockConfig, MockServer};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
usage: quorum-mock-llm [--config FILE] [--set KEY=VALUE]... [--bind ADDR]

A mock LLM server speaking the OpenAI, Ollama and Anthropic wire formats on one port.

options:
  --config FILE      YAML configuration (see the crate docs for every key)
  --set KEY=VALUE    override one key, e.g. --set chunks=4 --set latency={fixed: 50ms}
  --bind ADDR        listening address (default 127.0.0.1:9100; port 0 picks a free one)
  -h, --help         print this help

Environment: QUORUM_MOCK__KEY=value overrides keys too; RUST_LOG sets the log filter.
The first line on stdout is `listening on http://ADDR`.";

/// What the command line asks for.
#[derive(Debug, Default, PartialEq)]
struct Args {
    config: Option<String>,
    overrides: Vec<String>,
    help: bool,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Args> {
    let mut parsed = Args::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .with_context(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => parsed.help = true,
            "--config" => parsed.config = Some(value("--config")?),
            "--set" => parsed.overrides.push(value("--set")?),
            "--bind" => parsed.overrides.push(format!("bind={}", value("--bind")?)),
            other => anyhow::bail!("unknown argument \"{other}\" (try --help)"),
        }
    }
    Ok(parsed)
}

fn load_config(args: &Args) -> anyhow::Result<MockConfig> {
    let mut loader = Loader::new();
    if let Some(path) = &args.config {
        loader = loader.file(path);
    }
    let config = loader
        .env(ProcessEnv, "QUORUM_MOCK")
        .overrides(&args.overrides)?
        .load()?;
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    if args.help {
        println!("{USAGE}");
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let config = load_config(&args)?;
    let server = MockServer::start(config).await?;
    println!("listening on {}", server.base_url());
    std::io::stdout()
        .flush()
        .context("cannot write to stdout")?;
    let config = server.config();
    tracing::info!(
        addr = %server.addr(),
        models = config.models.len(),
        chunks = config.chunks,
        latency = ?config.latency,
        faults = config.faults.len(),
        api_key_required = config.require_api_key.is_some(),
        "quorum-mock-llm started"
    );

    wait_for_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> anyhow::Result<Args> {
        parse_args(list.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn flags_parse_in_both_forms() {
        let parsed = args(&[
            "--config",
            "m.yaml",
            "--set",
            "chunks=4",
            "--bind=127.0.0.1:0",
            "--set=seed=9",
        ])
        .unwrap();
        assert_eq!(parsed.config.as_deref(), Some("m.yaml"));
        assert_eq!(parsed.overrides, ["chunks=4", "bind=127.0.0.1:0", "seed=9"]);
        assert!(args(&["-h"]).unwrap().help);
    }

    #[test]
    fn bad_flags_are_reported() {
        assert!(
            args(&["--nope"])
                .unwrap_err()
                .to_string()
                .contains("\"--nope\"")
        );
        assert!(
            args(&["--config"])
                .unwrap_err()
                .to_string()
                .contains("--config needs a value")
        );
    }

    #[test]
    fn overrides_reach_the_config() {
        let parsed = args(&["--bind", "127.0.0.1:0", "--set", "latency={fixed: 5ms}"]).unwrap();
        let config = load_config(&parsed).unwrap();
        assert_eq!(config.bind.port(), 0);
        assert_eq!(
            config.latency,
            quorum_mock_llm::Latency::Fixed(quorum_config::Duration::from_millis(5))
        );
        let bad = args(&["--set", "chunks=many"]).unwrap();
        assert!(
            load_config(&bad)
                .unwrap_err()
                .to_string()
                .contains("chunks")
        );
    }
}
