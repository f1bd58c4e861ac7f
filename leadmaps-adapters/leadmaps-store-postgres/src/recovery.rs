//! Recovery codes (migration V8): identity data like the V4 tables, one row per unused code.
//!
//! - `put_recovery_codes` replaces a subject's set in one transaction: it deletes the old rows and
//!   inserts slots `0..n`. A transaction-level advisory lock keyed by the subject serialises two
//!   replacements of one set (without it the second insert would collide with the first's rows);
//! - `use_recovery_code` deletes the slot's row: of any number of concurrent users of one code, the
//!   first deletes it and the others find none, so a code is used once. A used code leaves no row,
//!   and the app role cannot update one back to unused.

use async_trait::async_trait;
use leadmaps_core::Result;
use leadmaps_core::auth::recovery::RecoveryStore;
use leadmaps_core::auth::tokens::recovery::RecoveryHash;
use leadmaps_core::auth::totp::Subject;

use crate::auth::subject_key;
use crate::error::{internal, pg};
use crate::store::PostgresStore;

/// First key of the advisory locks that serialise replacements of a subject's set ("rcv1" in
/// ASCII). The two-key lock space does not overlap the one-key space the migrator uses.
const LOCK_CLASS: i32 = 0x7263_7631;

#[async_trait]
impl RecoveryStore for PostgresStore {
    async fn put_recovery_codes(&self, subject: Subject, codes: &[RecoveryHash]) -> Result<()> {
        let (kind, subject) = subject_key(subject);
        let salts: Vec<&[u8]> = codes.iter().map(|code| &code.salt[..]).collect();
        let hashes: Vec<&[u8]> = codes.iter().map(|code| &code.hash[..]).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Subjects whose hashes collide share a lock: that only serialises them.
        let lock = tx
            .prepare_cached(
                "SELECT pg_advisory_xact_lock($1, hashtext($2::text || '/' || $3::uuid::text))",
            )
            .await
            .map_err(pg)?;
        tx.execute(&lock, &[&LOCK_CLASS, &kind, &subject])
            .await
            .map_err(pg)?;
        let delete = tx
            .prepare_cached(
                "DELETE FROM leadmaps.recovery_codes WHERE subject_kind = $1 AND subject_id = $2",
            )
            .await
            .map_err(pg)?;
        tx.execute(&delete, &[&kind, &subject]).await.map_err(pg)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO leadmaps.recovery_codes (subject_kind, subject_id, slot, salt, hash)
                 SELECT $1::text, $2::uuid, (c.n - 1)::integer, c.salt, c.hash
                 FROM unnest($3::bytea[], $4::bytea[]) WITH ORDINALITY AS c (salt, hash, n)",
            )
            .await
            .map_err(pg)?;
        tx.execute(&insert, &[&kind, &subject, &salts, &hashes])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn recovery_codes(&self, subject: Subject) -> Result<Vec<(u32, RecoveryHash)>> {
        let (kind, subject) = subject_key(subject);
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT slot, salt, hash FROM leadmaps.recovery_codes
                 WHERE subject_kind = $1 AND subject_id = $2 ORDER BY slot",
            )
            .await
            .map_err(pg)?;
        let rows = client
            .query(&select, &[&kind, &subject])
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|row| {
                let slot: i32 = row.try_get("slot").map_err(pg)?;
                let salt: Vec<u8> = row.try_get("salt").map_err(pg)?;
                let hash: Vec<u8> = row.try_get("hash").map_err(pg)?;
                let wrong = |_| internal("a stored recovery code has the wrong length");
                Ok((
                    u32::try_from(slot).map_err(|_| internal("a stored slot is negative"))?,
                    RecoveryHash {
                        salt: salt.try_into().map_err(wrong)?,
                        hash: hash.try_into().map_err(wrong)?,
                    },
                ))
            })
            .collect()
    }

    async fn use_recovery_code(&self, subject: Subject, slot: u32) -> Result<bool> {
        // No stored slot is that large.
        let Ok(slot) = i32::try_from(slot) else {
            return Ok(false);
        };
        let (kind, subject) = subject_key(subject);
        let client = self.client().await?;
        let take = client
            .prepare_cached(
                "DELETE FROM leadmaps.recovery_codes
                 WHERE subject_kind = $1 AND subject_id = $2 AND slot = $3",
            )
            .await
            .map_err(pg)?;
        let deleted = client
            .execute(&take, &[&kind, &subject, &slot])
            .await
            .map_err(pg)?;
        Ok(deleted == 1)
    }
}
