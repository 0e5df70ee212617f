//! Storage: one sqlx `Any` pool over a SQLite file (the default, in the data directory) or
//! PostgreSQL (`KT_DATABASE_URL=postgres://…`). The same migrations and queries serve
//! both: `$N` placeholders, TEXT ids, BIGINT unix-second times and 0/1 flags.

use std::path::Path;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Which database a URL names, for messages.
pub fn kind(url: &str) -> &'static str {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        "postgresql"
    } else {
        "sqlite"
    }
}

/// The SQLite URL of the default database file in `data_dir`.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("kt.db").display())
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL '{0}': use postgres://… or sqlite://…")]
    Unsupported(String),
    #[error("cannot open the {kind} database: {message}")]
    Connect { kind: &'static str, message: String },
    #[error("database migration failed: {0}")]
    Migrate(String),
}

/// Opens the pool and applies pending migrations.
pub async fn open(url: &str) -> Result<AnyPool, DbError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("sqlite:")) {
        return Err(DbError::Unsupported(redact_url(url)));
    }
    install_default_drivers();
    let kind = kind(url);
    let connect = |e: sqlx::Error| DbError::Connect {
        kind,
        message: e.to_string(),
    };
    let pool = if kind == "sqlite" {
        // One writer at a time; WAL lets readers run beside it, and the busy timeout turns
        // contention into waiting instead of "database is locked".
        AnyPoolOptions::new()
            .max_connections(8)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor as _;
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(connect)?
    } else {
        AnyPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await
            .map_err(connect)?
    };
    MIGRATOR.run(&pool).await.map_err(|e| DbError::Migrate(e.to_string()))?;
    Ok(pool)
}

/// How many migrations the database has applied, and how many this build knows.
pub async fn migration_status(pool: &AnyPool) -> Result<(usize, usize), sqlx::Error> {
    let row = sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = $1")
        .bind(true)
        .fetch_one(pool)
        .await?;
    let applied: i64 = row.try_get(0)?;
    Ok((applied as usize, MIGRATOR.migrations.len()))
}

/// Creates the SQLite file of `url` with mode 0600 before SQLite opens it, or narrows an
/// existing one to 0600. SQLite gives its `-wal` and `-shm` files the database file's
/// mode, so they follow.
pub fn private_sqlite_file(url: &str) -> std::io::Result<()> {
    let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else {
        return Ok(());
    };
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    let path = Path::new(path);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        for suffix in ["", "-wal", "-shm"] {
            let p = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if p.exists() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// A database URL with any password hidden, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:****{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(
            redact_url("postgres://kt:s3cret@db:5432/kt"),
            "postgres://kt:****@db:5432/kt"
        );
        assert_eq!(redact_url("postgres://kt@db/kt"), "postgres://kt@db/kt");
        assert_eq!(redact_url("sqlite:///tmp/kt.db"), "sqlite:///tmp/kt.db");
    }
}
