//! PostgreSQL: `DATABASE_URL` and `DB_*`.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

use crate::secret::Secret;

pub(super) fn parse_database_url(text: &str) -> Result<Secret, String> {
    // sqlx's error text could echo the password; say only what is expected.
    let scheme_ok = text.starts_with("postgres://") || text.starts_with("postgresql://");
    match PgConnectOptions::from_str(text) {
        Ok(_) if scheme_ok => Ok(Secret::new(text)),
        _ => Err("expected postgres://USER:PASSWORD@HOST:PORT/DATABASE".to_owned()),
    }
}
