//! Repository hygiene rules for the Quorum workspace, checked by `tests/tidy.rs` (`cargo tidy`).
//!
//! The rules are plain functions over plain data so that they are unit-tested on synthetic
//! workspaces: a rule that can never fail would be no rule.
//!
//! ```
//! use quorum_xtask::{Dep, DepKind, Package, check_layering};
//!
//! let pkg = |name: &str, dir: &str, deps: Vec<Dep>| Package {
//!     name: name.into(),
//!     dir: dir.into(),
//!     deps,
//! };
//! let dep = |name: &str| Dep { name: name.into(), kind: DepKind::Normal, optional: false, workspace: true };
//! // A leaf crate may not depend on a contract crate.
//! let bad = vec![
//!     pkg("quorum-config", "crates/config", vec![dep("quorum-queue")]),
//!     pkg("quorum-queue", "crates/queue", vec![]),
//! ];
//! let problems = check_layering(&bad);
//! assert_eq!(problems.len(), 1);
//! assert!(problems[0].contains("quorum-config"));
//! ```

/// The kind of a dependency edge, as `cargo metadata` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepKind {
    /// `[dependencies]`.
    Normal,
    /// `[dev-dependencies]`.
    Dev,
    /// `[build-dependencies]`.
    Build,
}

/// One dependency of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    /// The dependency's package name.
    pub name: String,
    /// Which table it is listed in.
    pub kind: DepKind,
    /// Whether it is optional (behind a feature).
    pub optional: bool,
    /// Whether it is a member of this workspace (a path dependency).
    pub workspace: bool,
}

/// A workspace member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Its package name (`quorum-…`).
    pub name: String,
    /// Its folder relative to the workspace root (`crates/queue`).
    pub dir: String,
    /// Its dependencies.
    pub deps: Vec<Dep>,
}

/// Where a package sits in the layering table of `docs/ARCHITECTURE.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// 0: config, resilience, metrics — no Quorum crate.
    Leaf,
    /// 1: llm, queue, store — layer 0 only.
    Contract,
    /// 2: `llm-*`, `queue-*`, `store-*` — their contract crate and layer 0.
    Provider {
        /// The contract crate this provider implements (`quorum-llm` for `quorum-llm-openai`).
        contract: String,
    },
    /// 3: `*-app` — layers 0–1, providers only as optional dependencies.
    Service,
    /// 4: `bins/*` — their service crate and layer 0.
    Binary,
    /// `examples/*` and the xtask: may use anything, nobody may use them.
    Tooling,
}

const LEAVES: &[&str] = &["quorum-config", "quorum-resilience", "quorum-metrics"];
const CONTRACTS: &[&str] = &["quorum-llm", "quorum-queue", "quorum-store"];

/// Classifies a package by name and folder.
///
/// # Errors
/// Returns a message when the package fits no row of the table: a new kind of crate must be added
/// to the table (and to `docs/ARCHITECTURE.md`) on purpose.
pub fn layer_of(pkg: &Package) -> Result<Layer, String> {
    let name = pkg.name.as_str();
    if pkg.dir.starts_with("examples/") || pkg.dir == "xtask" {
        return Ok(Layer::Tooling);
    }
    if pkg.dir.starts_with("bins/") {
        return Ok(Layer::Binary);
    }
    if LEAVES.contains(&name) {
        return Ok(Layer::Leaf);
    }
    if CONTRACTS.contains(&name) {
        return Ok(Layer::Contract);
    }
    if name.ends_with("-app") {
        return Ok(Layer::Service);
    }
    for contract in CONTRACTS {
        if name
            .strip_prefix(contract)
            .is_some_and(|rest| rest.starts_with('-'))
        {
            return Ok(Layer::Provider {
                contract: (*contract).to_owned(),
            });
        }
    }
    Err(format!(
        "{name} ({}) fits no row of the layering table: name it after its layer or extend the table in xtask and docs/ARCHITECTURE.md",
        pkg.dir
    ))
}

/// Checks every workspace dependency edge against the layering table; returns one message per
/// broken edge (empty when all is well).
///
/// Normal, build and dev edges follow the same table, with two allowances for dev edges: a
/// provider's, service's or binary's tests may use any contract or provider crate, and anyone's
/// tests may use a binary's library part (the mock LLM server is such a fixture). Nobody may
/// depend on tooling.
pub fn check_layering(packages: &[Package]) -> Vec<String> {
    let mut problems = Vec::new();
    let layers: Vec<(&Package, Layer)> = packages
        .iter()
        .filter_map(|p| match layer_of(p) {
            Ok(l) => Some((p, l)),
            Err(e) => {
                problems.push(e);
                None
            }
        })
        .collect();
    let find = |name: &str| layers.iter().find(|(p, _)| p.name == name).map(|(_, l)| l);
    for (pkg, layer) in &layers {
        for dep in pkg.deps.iter().filter(|d| d.workspace) {
            let Some(dep_layer) = find(&dep.name) else {
                continue;
            };
            if let Some(why) = forbidden(pkg, layer, dep, dep_layer) {
                problems.push(format!(
                    "{} -> {} ({:?} dependency): {why}",
                    pkg.name, dep.name, dep.kind
                ));
            }
        }
    }
    problems
}

fn forbidden(pkg: &Package, layer: &Layer, dep: &Dep, dep_layer: &Layer) -> Option<&'static str> {
    use Layer::*;
    if *dep_layer == Tooling {
        return Some("examples and the xtask are not dependencies");
    }
    if dep.kind == DepKind::Dev && (pkg.name == dep.name || *dep_layer == Binary) {
        // A binary's library part (the mock LLM server, say) is a test fixture for anyone.
        return None;
    }
    match (layer, dep_layer) {
        (Tooling, _) => None,
        (Leaf, _) => Some("leaf crates depend on no Quorum crate"),
        (Contract, Leaf) => None,
        (Contract, _) => Some("contract crates depend on layer 0 only"),
        (Provider { .. }, Leaf) => None,
        (Provider { contract }, Contract) if *contract == dep.name => None,
        (Provider { .. }, Contract | Provider { .. }) if dep.kind == DepKind::Dev => None,
        (Provider { .. }, Provider { .. }) => {
            Some("a provider never depends on a sibling provider")
        }
        (Provider { .. }, _) => Some("providers depend on their contract crate and layer 0 only"),
        (Service, Leaf | Contract) => None,
        (Service, Provider { .. }) if dep.optional || dep.kind == DepKind::Dev => None,
        (Service, Provider { .. }) => {
            Some("services use provider crates only as optional dependencies behind features")
        }
        (Service, _) => Some("services depend on layers 0-2 only"),
        (Binary, Leaf | Service) => None,
        (Binary, Contract | Provider { .. }) if dep.kind == DepKind::Dev => None,
        (Binary, _) => Some("a binary depends on its service crate and layer 0 only"),
    }
}

/// Checks that no library crate (under `crates/`) lists `anyhow` as a normal dependency.
pub fn check_no_anyhow_in_libraries(packages: &[Package]) -> Vec<String> {
    packages
        .iter()
        .filter(|p| p.dir.starts_with("crates/"))
        .filter(|p| {
            p.deps
                .iter()
                .any(|d| d.name == "anyhow" && d.kind != DepKind::Dev)
        })
        .map(|p| {
            format!(
                "{}: libraries return typed errors; anyhow is for binaries and tests",
                p.name
            )
        })
        .collect()
}

/// Checks that a package's folder is its name minus `quorum-` (`quorum-example-` for examples).
pub fn check_naming(packages: &[Package]) -> Vec<String> {
    packages
        .iter()
        .filter_map(|p| {
            let (parent, folder) = p.dir.rsplit_once('/').unwrap_or(("", p.dir.as_str()));
            let expected = match parent {
                "crates" | "bins" => format!("quorum-{folder}"),
                "examples" => format!("quorum-example-{folder}"),
                "" if folder == "xtask" => "quorum-xtask".to_owned(),
                _ => return Some(format!("{}: unexpected folder {}", p.name, p.dir)),
            };
            (p.name != expected).then(|| {
                format!(
                    "{} in {}: the package should be named {expected}",
                    p.name, p.dir
                )
            })
        })
        .collect()
}

/// Checks one member manifest's text: it inherits the workspace lints, and every third-party
/// dependency takes its version from `[workspace.dependencies]`.
pub fn check_manifest(dir: &str, manifest: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut section = "";
    let mut saw_lints = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[lints]" && line.replace(' ', "") == "workspace=true" {
            saw_lints = true;
        }
        let is_dep_table = section.ends_with("dependencies]");
        if is_dep_table
            && !line.is_empty()
            && !line.starts_with('#')
            && !line.contains("workspace = true")
            && !line.contains("workspace=true")
        {
            problems.push(format!(
                "{dir}/Cargo.toml {section}: `{line}` must use `workspace = true` (versions live in the root [workspace.dependencies])"
            ));
        }
    }
    if !saw_lints {
        problems.push(format!("{dir}/Cargo.toml: add `[lints] workspace = true`"));
    }
    problems
}

/// Checks that a library's `lib.rs` opens with crate docs (`//!`).
pub fn check_lib_docs(dir: &str, lib_rs: &str) -> Vec<String> {
    match lib_rs.lines().find(|l| !l.trim().is_empty()) {
        Some(first) if first.starts_with("//!") => Vec::new(),
        _ => vec![format!("{dir}/src/lib.rs must open with `//!` crate docs")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(name: &str, kind: DepKind, optional: bool) -> Dep {
        Dep {
            name: name.into(),
            kind,
            optional,
            workspace: name.starts_with("quorum-"),
        }
    }

    fn pkg(name: &str, dir: &str, deps: Vec<Dep>) -> Package {
        Package {
            name: name.into(),
            dir: dir.into(),
            deps,
        }
    }

    fn workspace(extra: Vec<Package>) -> Vec<Package> {
        let mut all = vec![
            pkg("quorum-config", "crates/config", vec![]),
            pkg("quorum-resilience", "crates/resilience", vec![]),
            pkg(
                "quorum-llm",
                "crates/llm",
                vec![dep("quorum-config", DepKind::Normal, false)],
            ),
            pkg("quorum-queue", "crates/queue", vec![]),
            pkg(
                "quorum-llm-openai",
                "crates/llm-openai",
                vec![dep("quorum-llm", DepKind::Normal, false)],
            ),
            pkg(
                "quorum-llm-ollama",
                "crates/llm-ollama",
                vec![dep("quorum-llm", DepKind::Normal, false)],
            ),
            pkg(
                "quorum-queue-nats",
                "crates/queue-nats",
                vec![dep("quorum-queue", DepKind::Normal, false)],
            ),
            pkg(
                "quorum-advisor-app",
                "crates/advisor-app",
                vec![dep("quorum-llm-openai", DepKind::Normal, true)],
            ),
            pkg(
                "quorum-advisor",
                "bins/advisor",
                vec![dep("quorum-advisor-app", DepKind::Normal, false)],
            ),
            pkg(
                "quorum-example-x",
                "examples/x",
                vec![dep("quorum-advisor-app", DepKind::Normal, false)],
            ),
        ];
        all.extend(extra);
        all
    }

    #[test]
    fn a_correct_workspace_has_no_problems() {
        assert_eq!(check_layering(&workspace(vec![])), Vec::<String>::new());
    }

    #[test]
    fn each_forbidden_edge_is_reported() {
        let cases = [
            pkg(
                "quorum-metrics",
                "crates/metrics",
                vec![dep("quorum-config", DepKind::Normal, false)],
            ),
            pkg(
                "quorum-store",
                "crates/store",
                vec![dep("quorum-llm", DepKind::Normal, false)],
            ),
            pkg(
                "quorum-llm-anthropic",
                "crates/llm-anthropic",
                vec![dep("quorum-llm-openai", DepKind::Normal, false)],
            ),
            pkg(
                "quorum-queue-redis",
                "crates/queue-redis",
                vec![dep("quorum-llm", DepKind::Normal, false)],
            ),
            pkg(
                "quorum-worker-app",
                "crates/worker-app",
                vec![dep("quorum-queue-nats", DepKind::Normal, false)],
            ),
            pkg(
                "quorum-worker",
                "bins/worker",
                vec![dep("quorum-queue", DepKind::Normal, false)],
            ),
            pkg(
                "quorum-autoscaler-app",
                "crates/autoscaler-app",
                vec![dep("quorum-example-x", DepKind::Dev, false)],
            ),
        ];
        for bad in cases {
            let name = bad.name.clone();
            let problems = check_layering(&workspace(vec![bad]));
            assert_eq!(problems.len(), 1, "{name}: {problems:?}");
            assert!(problems[0].starts_with(&name), "{problems:?}");
        }
    }

    #[test]
    fn unknown_crate_kinds_must_be_classified() {
        let problems = check_layering(&workspace(vec![pkg(
            "quorum-common",
            "crates/common",
            vec![],
        )]));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("fits no row"), "{problems:?}");
    }

    #[test]
    fn dev_edges_to_fixtures_are_allowed() {
        let ok = pkg(
            "quorum-queue-redis",
            "crates/queue-redis",
            vec![
                dep("quorum-queue", DepKind::Normal, false),
                dep("quorum-queue", DepKind::Dev, false),
            ],
        );
        assert!(check_layering(&workspace(vec![ok])).is_empty());
    }

    #[test]
    fn binaries_are_fixtures_for_tests_only() {
        let fixture = pkg("quorum-mock-llm", "bins/mock-llm", vec![]);
        let dev = pkg(
            "quorum-llm-ollama",
            "crates/llm-ollama",
            vec![
                dep("quorum-llm", DepKind::Normal, false),
                dep("quorum-mock-llm", DepKind::Dev, false),
            ],
        );
        assert!(check_layering(&workspace(vec![fixture.clone(), dev])).is_empty());
        let normal = pkg(
            "quorum-llm-anthropic",
            "crates/llm-anthropic",
            vec![dep("quorum-mock-llm", DepKind::Normal, false)],
        );
        assert_eq!(check_layering(&workspace(vec![fixture, normal])).len(), 1);
    }

    #[test]
    fn anyhow_only_outside_libraries() {
        let lib = pkg(
            "quorum-llm",
            "crates/llm",
            vec![dep("anyhow", DepKind::Normal, false)],
        );
        let lib_dev = pkg(
            "quorum-queue",
            "crates/queue",
            vec![dep("anyhow", DepKind::Dev, false)],
        );
        let bin = pkg(
            "quorum-advisor",
            "bins/advisor",
            vec![dep("anyhow", DepKind::Normal, false)],
        );
        let problems = check_no_anyhow_in_libraries(&[lib, lib_dev, bin]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("quorum-llm:"));
    }

    #[test]
    fn folder_names_match_package_names() {
        let problems = check_naming(&[
            pkg("quorum-llm", "crates/llm", vec![]),
            pkg("quorum-ollama", "crates/llm-ollama", vec![]),
            pkg("quorum-example-demo", "examples/demo", vec![]),
            pkg("quorum-advisor", "bins/advisor", vec![]),
        ]);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("quorum-llm-ollama"), "{problems:?}");
    }

    #[test]
    fn manifests_inherit_lints_and_versions() {
        let good = "[package]\nname = \"x\"\n[dependencies]\nserde.workspace = true\ntokio = { workspace = true, features = [\"rt\"] }\n[lints]\nworkspace = true\n";
        assert!(check_manifest("crates/x", good).is_empty());
        let bad = "[package]\nname = \"x\"\n[dev-dependencies]\nserde = \"1\"\n";
        let problems = check_manifest("crates/x", bad);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("serde = \"1\""));
        assert!(problems[1].contains("[lints]"));
    }

    #[test]
    fn lib_docs_must_open_the_file() {
        assert!(check_lib_docs("crates/x", "\n//! Docs.\npub fn f() {}").is_empty());
        assert_eq!(
            check_lib_docs("crates/x", "pub fn f() {}\n//! late").len(),
            1
        );
    }
}
