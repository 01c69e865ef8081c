//! The PostgreSQL and Redis the tests share (127.0.0.1:5432 and :6379): where they are,
//! and removing what a test made there (its database, its key prefix) once it is done.

use std::process::{Command, Stdio};

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Drops a test database (best effort; connections still open are ended).
pub fn drop_database(name: &str) {
    let _ = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-qc",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Deletes every Redis key under a test prefix (best effort).
pub fn delete_redis_keys(prefix: &str) {
    if let Ok(client) = redis::Client::open(REDIS_URL)
        && let Ok(mut conn) = client.get_connection()
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}
