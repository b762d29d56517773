//! Start-up failures give one clear error naming what failed, never a panic.

use quorum_store::{Store, StoreConfig, StoreError};

#[tokio::test]
async fn bad_urls_are_named_and_passwords_hidden() {
    for (url, expect) in [
        (
            "mysql://root:hunter2@db/x",
            "invalid database url \"mysql://root:***@db/x\": expected sqlite://PATH, sqlite::memory: or postgres://HOST/DB",
        ),
        ("", "invalid database url \"\": empty url"),
        ("localhost:5432", "invalid database url \"localhost:5432\""),
    ] {
        let e = Store::connect(url, StoreConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::InvalidUrl { .. }), "{e:?}");
        assert!(e.to_string().starts_with(expect), "{e}");
        assert!(!e.to_string().contains("hunter2"));
    }
    let e = Store::connect(
        "postgres://u:hunter2@host:notaport/db",
        StoreConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, StoreError::InvalidUrl { .. }), "{e:?}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(
        e.to_string()
            .starts_with("invalid database url \"postgres://u:***@host:notaport/db\": "),
        "{e}"
    );
}

#[tokio::test]
async fn unreachable_postgres_is_named() {
    let e = Store::connect(
        "postgres://postgres@127.0.0.1:1/postgres",
        StoreConfig::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot connect to postgres at 127.0.0.1:1: connection refused"
    );
    assert!(e.is_retryable());
    assert!(
        std::error::Error::source(&e).is_some(),
        "driver error kept as source"
    );
}

#[tokio::test]
async fn unopenable_sqlite_paths_are_named() {
    // Root can write anywhere on a normal file system, so use places nobody can create files:
    // a missing directory, and /proc.
    let e = Store::connect(
        "sqlite:///nonexistent-quorum-dir/sub/x.db",
        StoreConfig::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot open sqlite database \"/nonexistent-quorum-dir/sub/x.db\": unable to open database file (directory does not exist?)"
    );
    let e = Store::connect(
        "sqlite:///proc/quorum-store-test.db",
        StoreConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, StoreError::Connect { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("cannot open sqlite database \"/proc/quorum-store-test.db\": "),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "cannot open sqlite database \"/proc/quorum-store-test.db\": unable to open database file (read-only directory?)"
    );
}

#[tokio::test]
async fn read_only_mode_on_a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.db");
    let e = Store::connect(
        &format!("sqlite://{}?mode=ro", path.display()),
        StoreConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "cannot open sqlite database {:?}: unable to open database file",
            path.display().to_string()
        )),
        "{e}"
    );
}

#[tokio::test]
async fn bad_config_is_named() {
    let config = StoreConfig {
        schema: Some("x; drop".into()),
        ..StoreConfig::default()
    };
    let e = Store::connect("sqlite::memory:", config).await.unwrap_err();
    assert!(
        e.to_string().starts_with("invalid store config: schema: "),
        "{e}"
    );
}

#[tokio::test]
async fn in_memory_sqlite_works_and_is_private() {
    let a = Store::connect("sqlite::memory:", StoreConfig::default())
        .await
        .unwrap();
    let b = Store::connect("sqlite::memory:", StoreConfig::default())
        .await
        .unwrap();
    a.create_session(Some("s"), None).await.unwrap();
    assert!(a.get_session("s").await.unwrap().is_some());
    assert!(b.get_session("s").await.unwrap().is_none());
    assert_eq!(a.backend(), quorum_store::Backend::Sqlite);
}

#[tokio::test]
async fn require_services_turns_a_skip_into_a_failure() {
    use quorum_config::MapEnv;
    let none = quorum_store::test_util::postgres_with(StoreConfig::default(), &MapEnv::new()).await;
    assert!(none.is_none());
    let env = MapEnv::from([("QUORUM_REQUIRE_SERVICES", "1")]);
    let result = tokio::spawn(async move {
        quorum_store::test_util::postgres_with(StoreConfig::default(), &env).await
    })
    .await;
    let panic = result.unwrap_err().into_panic();
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("QUORUM_REQUIRE_SERVICES=1"), "{text}");
}
