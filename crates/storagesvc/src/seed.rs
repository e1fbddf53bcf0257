//! The two books of the original service, written on first start-up.
//!
//! They are seeded only when the table is empty, and like every write each goes through the
//! outbox, so consumers hear about them too.

use events::BookChanged;
use sqlx::PgPool;

use crate::books::{self, BookFields};
use crate::outbox;

/// Any constant shared by every storagesvc instance: the advisory lock serialising seeding.
const SEED_LOCK_KEY: i64 = 0x5eed_b00c;

/// The original's books.
pub fn original_books() -> [BookFields; 2] {
    [
        BookFields {
            title: "One book".to_owned(),
            author: "John Doe".to_owned(),
            desc: "The first book on the shelf.".to_owned(),
        },
        BookFields {
            title: "Second book".to_owned(),
            author: "Jane Doe".to_owned(),
            desc: "The second book on the shelf.".to_owned(),
        },
    ]
}

/// Inserts [`original_books`] if the table is empty; returns how many were written.
pub async fn seed_if_empty(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Two replicas starting together would both see an empty table; the lock makes the
    // second wait for the first's commit and then see the books.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SEED_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    if !books::is_empty(&mut tx).await? {
        return Ok(0);
    }
    let seeds = original_books();
    for fields in &seeds {
        let book = books::insert(&mut tx, fields).await?;
        let event = BookChanged::created(book.to_event_data(), book.version, book.updated_at);
        outbox::enqueue(&mut tx, &event).await?;
    }
    tx.commit().await?;
    Ok(seeds.len())
}
