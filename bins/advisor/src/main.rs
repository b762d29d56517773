//! `quorum-advisor`: parses the command line, loads the configuration and runs the advisor
//! service (`quorum-advisor-app`).
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a binary: --help and `config show` print to stdout, errors to stderr"
)]

use std::process::ExitCode;

use quorum_advisor_app::AdvisorConfig;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: quorum-advisor [serve] [--config FILE] [--set KEY=VALUE]... [--bind ADDR]
       quorum-advisor config validate [--config FILE] [--set KEY=VALUE]...
       quorum-advisor config show [--config FILE] [--set KEY=VALUE]...

Asks several models the same question concurrently and streams their answers as they arrive;
also an OpenAI-compatible gateway (POST /v1/chat/completions) to every configured model.

commands:
  serve              run the server (the default)
  config validate    check the configuration (every key, every provider section) and exit
  config show        print the effective configuration, secrets redacted

options:
  --config FILE      YAML configuration layered over the built-in defaults
  --set KEY=VALUE    override one key, e.g. --set engine.max_concurrent_jobs=10
  --bind ADDR        listening address (default 127.0.0.1:8080)
  -h, --help         print this help

With no configuration the advisor stores jobs in ./quorum-advisor.db (SQLite) and asks the
Ollama models gemma3:1b, llama3.2:1b and deepseek-r1:1.5b at http://localhost:11434.
Environment: QUORUM__SECTION__KEY=value overrides keys (QUORUM__SERVER__BIND=0.0.0.0:8080);
RUST_LOG sets the log filter (default info).

API: POST /v1/advise, GET /v1/jobs, GET|DELETE /v1/jobs/{id}, GET /v1/jobs/{id}/events (SSE),
POST /v1/chat/completions, GET /v1/models, /livez, /readyz, /startupz, /v1/admin/status,
/metrics. See docs/advisor.md.";

#[derive(Debug, Default, PartialEq)]
enum Command {
    #[default]
    Serve,
    Validate,
    Show,
    Help,
}

#[derive(Debug, Default, PartialEq)]
struct Args {
    command: Command,
    config: Option<String>,
    overrides: Vec<String>,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args::default();
    let mut args = args.into_iter().peekable();
    match args.peek().map(String::as_str) {
        Some("serve") => {
            args.next();
        }
        Some("config") => {
            args.next();
            parsed.command = match args.next().as_deref() {
                Some("validate") => Command::Validate,
                Some("show") => Command::Show,
                Some(other) => {
                    return Err(format!(
                        "unknown config command \"{other}\" (validate or show)"
                    ));
                }
                None => return Err("config needs a command: validate or show".into()),
            };
        }
        _ => {}
    }
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
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => parsed.command = Command::Help,
            "--config" => parsed.config = Some(value("--config")?),
            "--set" => parsed.overrides.push(value("--set")?),
            "--bind" => parsed
                .overrides
                .push(format!("server.bind={}", value("--bind")?)),
            other => return Err(format!("unknown argument \"{other}\" (try --help)")),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.command == Command::Help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let config = match AdvisorConfig::load(args.config.as_deref(), &args.overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match args.command {
        Command::Validate => match quorum_advisor_app::check(&config) {
            Ok(()) => {
                println!("configuration ok: {}", config.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Show => match config.redacted_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve | Command::Help => serve(config),
    }
}

fn serve(config: AdvisorConfig) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match quorum_advisor_app::run_blocking(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn commands_and_flags() {
        assert_eq!(parse(&[]).unwrap().command, Command::Serve);
        let a = parse(&["config", "show", "--config=x.yaml", "--bind", "0.0.0.0:1"]).unwrap();
        assert_eq!(a.command, Command::Show);
        assert_eq!(a.config.as_deref(), Some("x.yaml"));
        assert_eq!(a.overrides, ["server.bind=0.0.0.0:1"]);
        assert_eq!(parse(&["serve", "-h"]).unwrap().command, Command::Help);
        assert!(parse(&["config"]).unwrap_err().contains("validate or show"));
        assert!(parse(&["--nope"]).unwrap_err().contains("--nope"));
        assert!(
            parse(&["--set"])
                .unwrap_err()
                .contains("--set needs a value")
        );
    }
}
