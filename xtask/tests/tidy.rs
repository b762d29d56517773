//! Checks the real workspace against the rules in `quorum_xtask` (run alone with `cargo tidy`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions: a panic is the failure report"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use quorum_xtask::{
    Dep, DepKind, Package, check_layering, check_lib_docs, check_manifest, check_naming,
    check_no_anyhow_in_libraries,
};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn workspace() -> Vec<Package> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let root = root();
    meta["packages"]
        .as_array()
        .expect("packages array")
        .iter()
        .map(|p| {
            let manifest = PathBuf::from(p["manifest_path"].as_str().expect("manifest_path"));
            let dir = manifest
                .parent()
                .expect("manifest has a folder")
                .strip_prefix(&root)
                .expect("member inside the workspace")
                .to_string_lossy()
                .into_owned();
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies array")
                .iter()
                .map(|d| Dep {
                    name: d["name"].as_str().expect("dep name").to_owned(),
                    kind: match d["kind"].as_str() {
                        Some("dev") => DepKind::Dev,
                        Some("build") => DepKind::Build,
                        _ => DepKind::Normal,
                    },
                    optional: d["optional"].as_bool().unwrap_or(false),
                    workspace: d.get("path").is_some_and(|v| !v.is_null()),
                })
                .collect();
            Package {
                name: p["name"].as_str().expect("package name").to_owned(),
                dir,
                deps,
            }
        })
        .collect()
}

fn assert_clean(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

#[test]
fn layering_table_holds() {
    assert_clean("layering", check_layering(&workspace()));
}

#[test]
fn libraries_do_not_use_anyhow() {
    assert_clean("anyhow", check_no_anyhow_in_libraries(&workspace()));
}

#[test]
fn folders_match_package_names() {
    assert_clean("naming", check_naming(&workspace()));
}

#[test]
fn manifests_inherit_workspace_lints_and_versions() {
    let mut problems = Vec::new();
    for pkg in workspace() {
        let text = std::fs::read_to_string(root().join(&pkg.dir).join("Cargo.toml"))
            .expect("member manifest readable");
        problems.extend(check_manifest(&pkg.dir, &text));
    }
    assert_clean("manifests", problems);
}

#[test]
fn libraries_open_with_crate_docs() {
    let mut problems = Vec::new();
    for pkg in workspace() {
        let lib = root().join(&pkg.dir).join("src/lib.rs");
        if let Ok(text) = std::fs::read_to_string(&lib) {
            problems.extend(check_lib_docs(&pkg.dir, &text));
        }
    }
    assert_clean("crate docs", problems);
}

#[test]
fn the_workspace_is_not_empty() {
    // Guards the checks above against passing vacuously on a metadata parse that finds nothing.
    let names: Vec<String> = workspace().into_iter().map(|p| p.name).collect();
    for expected in ["quorum-config", "quorum-resilience", "quorum-metrics"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}
