//! Row counts of a site database, for a backup's manifest and for proving a restore.

use domain::{DbIdent, DbPassword};
use sqlx::mysql::MySqlConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::collections::BTreeMap;

/// Exact row counts of every base table, read in one consistent snapshot.
pub async fn count(
    host: &str,
    port: u16,
    user: &DbIdent,
    password: &DbPassword,
    database: &DbIdent,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let options = MySqlConnectOptions::new()
        .host(host)
        .port(port)
        .username(user.as_str())
        .password(password.expose())
        .database(database.as_str())
        .disable_statement_logging();
    let mut conn = options.connect().await?;
    sqlx::raw_sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .execute(&mut conn)
        .await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut counts = BTreeMap::new();
    for table in tables {
        // Table names come from the server's own catalogue; backquotes inside are doubled.
        let sql = format!("SELECT COUNT(*) FROM `{}`", table.replace('`', "``"));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await?;
        counts.insert(table, n);
    }
    sqlx::raw_sql("COMMIT").execute(&mut conn).await?;
    conn.close().await?;
    Ok(counts)
}
