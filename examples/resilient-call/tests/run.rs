//! The README's run command really runs: the example completes, accounts for every request, and
//! reports clear one-line errors for bad configuration.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions: a panic is the failure report"
)]

use std::process::Command;

fn example(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quorum-example-resilient-call"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the example starts")
}

#[test]
fn a_short_run_accounts_for_every_request() {
    let out = example(&[
        "--set",
        "requests=300",
        "--set",
        "provider.outage_start=50ms",
        "--set",
        "provider.outage_length=100ms",
        "--metrics",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = stdout
        .lines()
        .find(|l| l.starts_with("done in"))
        .expect("a summary line");
    // "done in 0.52s: 250 ok, 3 permanent (not retried), ..." — the counts add up to 300.
    let total: u64 = done
        .split(": ")
        .nth(1)
        .expect("counts after the colon")
        .split(", ")
        .map(|part| part.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 300, "{done}");
    assert!(
        stdout.contains("quorum_resilience_retries_total"),
        "{stdout}"
    );
}

#[test]
fn bad_configuration_is_one_clear_line() {
    let out = example(&["--set", "retry.max_atempts=3"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: retry.max_atempts: unknown field `max_atempts`, did you mean `max_attempts`? (--set retry.max_atempts=3)"
    );
    let out = example(&["--set", "retry.initial_delay=10"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.starts_with("error: retry.initial_delay: invalid duration \"10\""),
        "{stderr}"
    );
}

#[test]
fn help_lists_the_options() {
    let out = example(&["--help"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for option in ["--config", "--set", "--show-config", "--metrics"] {
        assert!(stdout.contains(option), "{option} missing from --help");
    }
}
