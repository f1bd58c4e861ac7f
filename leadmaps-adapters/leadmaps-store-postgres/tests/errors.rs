//! Errors say what kind of failure happened and never carry a password or an address.

use leadmaps_core::ErrorKind;
use leadmaps_store_postgres::{PostgresConfig, PostgresStore, migrate};

fn chain(error: &leadmaps_core::Error) -> String {
    let mut text = format!("{error} | {error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(" | {cause} | {cause:?}"));
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_the_error_names_no_secret() {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let config =
        PostgresConfig::from_url("postgres://owner:hunter2@127.0.0.1:1/leadmaps?connect_timeout=2")
            .unwrap()
            .with_app_password("app-s3cret");
    for error in [
        migrate(&config).await.unwrap_err(),
        PostgresStore::connect(&config).await.unwrap_err(),
    ] {
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert!(error.is_retryable());
        let text = chain(&error);
        for secret in ["hunter2", "app-s3cret", "127.0.0.1", "owner"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
    let skip_migrations = config.with_migrate_on_connect(false);
    let error = PostgresStore::connect(&skip_migrations).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert!(!chain(&error).contains("app-s3cret"));
}

#[tokio::test]
async fn a_malformed_app_role_is_invalid_before_any_connection() {
    let config = PostgresConfig::from_url("postgres://127.0.0.1:1/x")
        .unwrap()
        .with_app_role("Robert'); DROP TABLE x;--");
    assert_eq!(
        migrate(&config).await.unwrap_err().kind(),
        ErrorKind::Invalid
    );
    assert_eq!(
        PostgresStore::connect(&config).await.unwrap_err().kind(),
        ErrorKind::Invalid
    );
}
