//! [`TotpStore`], [`SessionStore`], [`RecoveryStore`] and [`StepUpStore`] on the
//! `totp_factors`, `magic_links`, `sessions`, `recovery_codes` and `step_up_grants` tables: the
//! instance-wide authentication realm, used before any scope exists.
//!
//! Every consuming operation is one statement, so it is atomic in SQLite whatever else runs on
//! the file: a TOTP step is claimed by one conditional UPDATE (a changed row is a win), a link is
//! taken by one `DELETE ... RETURNING`, a challenge try is counted by one `UPDATE ... RETURNING`,
//! a recovery code and a step-up grant are each used by one DELETE of at most one row, and
//! last-seen times only move forward.

use async_trait::async_trait;
use leadmaps_core::auth::recovery::RecoveryStore;
use leadmaps_core::auth::session::{MagicLink, Realm, SessionRecord, SessionStore};
use leadmaps_core::auth::staff::{SensitiveAction, StepUpStore};
use leadmaps_core::auth::tokens::TokenDigest;
use leadmaps_core::auth::tokens::recovery::RecoveryHash;
use leadmaps_core::auth::totp::{Subject, TotpFactor, TotpStore};
use leadmaps_core::mail::Address;
use leadmaps_core::tenancy::{StaffId, UserId};
use leadmaps_core::{Error, Result};
use rusqlite::types::Type;
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::SqliteStore;
use crate::codec::{bound_nanos, corrupt, get_flag, get_time, unix_nanos};
use crate::error::{classify, db};
use crate::sql;

/// A subject as its two key columns: kind and id bytes.
pub(crate) fn subject_key(subject: Subject) -> (&'static str, [u8; 16]) {
    match subject {
        Subject::User(id) => ("user", *id.as_uuid().as_bytes()),
        Subject::Staff(id) => ("staff", *id.as_uuid().as_bytes()),
    }
}

/// Reads a subject from its kind and id columns.
fn get_subject(row: &Row<'_>, kind: usize, id: usize) -> rusqlite::Result<Subject> {
    let name: String = row.get(kind)?;
    let uuid = Uuid::from_bytes(row.get(id)?);
    match name.as_str() {
        "user" => Ok(Subject::User(UserId::from_uuid(uuid))),
        "staff" => Ok(Subject::Staff(StaffId::from_uuid(uuid))),
        _ => Err(corrupt(kind, Type::Text, "subject kind")),
    }
}

/// Reads a token digest from its KEK id and MAC columns.
pub(crate) fn get_digest(row: &Row<'_>, kek: usize, mac: usize) -> rusqlite::Result<TokenDigest> {
    Ok(TokenDigest {
        key_id: row.get(kek)?,
        mac: row.get(mac)?,
    })
}

/// Reads an optional instant column.
pub(crate) fn get_opt_time(
    row: &Row<'_>,
    column: usize,
) -> rusqlite::Result<Option<OffsetDateTime>> {
    match row.get::<_, Option<i64>>(column)? {
        None => Ok(None),
        Some(_) => get_time(row, column).map(Some),
    }
}

/// An optional instant as optional unix nanoseconds.
pub(crate) fn opt_nanos(at: Option<OffsetDateTime>) -> Result<Option<i64>> {
    at.map(unix_nanos).transpose()
}

/// Reads an e-mail address column; this code writes only parsed (normalised) addresses.
pub(crate) fn get_address(row: &Row<'_>, column: usize) -> rusqlite::Result<Address> {
    let text: String = row.get(column)?;
    Address::parse(&text)
        .ok()
        .filter(|address| address.as_str() == text)
        .ok_or_else(|| corrupt(column, Type::Text, "e-mail address"))
}

const fn realm_name(realm: Realm) -> &'static str {
    match realm {
        Realm::Customer => "customer",
        Realm::Staff => "staff",
    }
}

fn get_realm(row: &Row<'_>, column: usize) -> rusqlite::Result<Realm> {
    let name: String = row.get(column)?;
    match name.as_str() {
        "customer" => Ok(Realm::Customer),
        "staff" => Ok(Realm::Staff),
        _ => Err(corrupt(column, Type::Text, "realm")),
    }
}

/// A TOTP step as an INTEGER.
fn step_value(step: u64) -> Result<i64> {
    i64::try_from(step).map_err(|_| Error::invalid("TOTP step out of range"))
}

fn read_factor(subject: Subject, row: &Row<'_>) -> rusqlite::Result<TotpFactor> {
    let last_step = match row.get::<_, Option<i64>>(1)? {
        None => None,
        Some(step) => Some(u64::try_from(step).map_err(|_| corrupt(1, Type::Integer, "step"))?),
    };
    Ok(TotpFactor {
        subject,
        sealed_seed: row.get(0)?,
        last_step,
        failures: row.get(2)?,
        locked_until: get_opt_time(row, 3)?,
        confirmed: get_flag(row, 4)?,
    })
}

fn read_link(row: &Row<'_>) -> rusqlite::Result<MagicLink> {
    Ok(MagicLink {
        selector: row.get(0)?,
        digest: get_digest(row, 1, 2)?,
        realm: get_realm(row, 3)?,
        email: get_address(row, 4)?,
        created_at: get_time(row, 5)?,
        expires_at: get_time(row, 6)?,
    })
}

fn read_session(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    let second_factor: i64 = row.get(5)?;
    Ok(SessionRecord {
        selector: row.get(0)?,
        digest: get_digest(row, 1, 2)?,
        subject: get_subject(row, 3, 4)?,
        second_factor: second_factor != 0,
        created_at: get_time(row, 6)?,
        last_seen_at: get_time(row, 7)?,
    })
}

#[async_trait]
impl TotpStore for SqliteStore {
    async fn put_totp(&self, factor: &TotpFactor) -> Result<()> {
        let (kind, id) = subject_key(factor.subject);
        let last_step = factor.last_step.map(step_value).transpose()?;
        let locked_until = opt_nanos(factor.locked_until)?;
        let (seed, failures) = (factor.sealed_seed.clone(), factor.failures);
        let confirmed = i64::from(factor.confirmed);
        self.conn
            .run(move |conn| {
                let mut upsert = conn.prepare_cached(sql::UPSERT_TOTP).map_err(db)?;
                upsert
                    .execute(params![
                        kind,
                        id,
                        seed,
                        last_step,
                        failures,
                        locked_until,
                        confirmed
                    ])
                    .map_err(db)?;
                Ok(())
            })
            .await
    }

    async fn totp(&self, subject: Subject) -> Result<Option<TotpFactor>> {
        let (kind, id) = subject_key(subject);
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_TOTP).map_err(db)?;
                select
                    .query_row(params![kind, id], |row| read_factor(subject, row))
                    .optional()
                    .map_err(db)
            })
            .await
    }

    async fn claim_totp_step(&self, subject: Subject, step: u64) -> Result<bool> {
        let (kind, id) = subject_key(subject);
        let step = step_value(step)?;
        self.conn
            .run(move |conn| {
                let mut claim = conn.prepare_cached(sql::CLAIM_TOTP_STEP).map_err(db)?;
                if claim.execute(params![kind, id, step]).map_err(db)? == 1 {
                    return Ok(true);
                }
                // Lost, or no factor at all: only the latter is an error.
                let mut select = conn.prepare_cached(sql::SELECT_TOTP).map_err(db)?;
                let exists = select
                    .query_row(params![kind, id], |_| Ok(()))
                    .optional()
                    .map_err(db)?;
                exists.map(|()| false).ok_or(Error::NotFound)
            })
            .await
    }

    async fn record_totp_failure(
        &self,
        subject: Subject,
        now: OffsetDateTime,
        lock_after: u32,
        lock_for: Duration,
    ) -> Result<u32> {
        let (kind, id) = subject_key(subject);
        let until = unix_nanos(now + lock_for)?;
        self.conn
            .run(move |conn| {
                let mut record = conn.prepare_cached(sql::RECORD_TOTP_FAILURE).map_err(db)?;
                record
                    .query_row(params![kind, id, until, lock_after], |row| row.get(0))
                    .optional()
                    .map_err(db)?
                    .ok_or(Error::NotFound)
            })
            .await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert_link(&self, link: &MagicLink) -> Result<()> {
        let created_at = unix_nanos(link.created_at)?;
        let expires_at = unix_nanos(link.expires_at)?;
        let link = link.clone();
        self.conn
            .run(move |conn| {
                let mut insert = conn.prepare_cached(sql::INSERT_LINK).map_err(db)?;
                insert
                    .execute(params![
                        link.selector,
                        link.digest.key_id,
                        link.digest.mac,
                        realm_name(link.realm),
                        link.email.as_str(),
                        created_at,
                        expires_at
                    ])
                    .map_err(|e| classify(e, "link selector exists"))?;
                Ok(())
            })
            .await
    }

    async fn link(&self, selector: &str) -> Result<Option<MagicLink>> {
        let selector = selector.to_owned();
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_LINK).map_err(db)?;
                select
                    .query_row([selector], read_link)
                    .optional()
                    .map_err(db)
            })
            .await
    }

    async fn take_link(&self, selector: &str, now: OffsetDateTime) -> Result<Option<MagicLink>> {
        let (selector, now) = (selector.to_owned(), bound_nanos(now));
        self.conn
            .run(move |conn| {
                let mut take = conn.prepare_cached(sql::TAKE_LINK).map_err(db)?;
                take.query_row(params![selector, now], read_link)
                    .optional()
                    .map_err(db)
            })
            .await
    }

    async fn links_sent(
        &self,
        email: &Address,
        since: OffsetDateTime,
    ) -> Result<(u32, Option<OffsetDateTime>)> {
        let (email, since) = (email.as_str().to_owned(), bound_nanos(since));
        self.conn
            .run(move |conn| {
                let mut count = conn.prepare_cached(sql::LINKS_SENT).map_err(db)?;
                count
                    .query_row(params![email, since], |row| {
                        let sent: i64 = row.get(0)?;
                        let sent = u32::try_from(sent).unwrap_or(u32::MAX);
                        Ok((sent, get_opt_time(row, 1)?))
                    })
                    .map_err(db)
            })
            .await
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<()> {
        let (kind, id) = subject_key(session.subject);
        let created_at = unix_nanos(session.created_at)?;
        let last_seen_at = unix_nanos(session.last_seen_at)?;
        let session = session.clone();
        self.conn
            .run(move |conn| {
                let mut insert = conn.prepare_cached(sql::INSERT_SESSION).map_err(db)?;
                insert
                    .execute(params![
                        session.selector,
                        session.digest.key_id,
                        session.digest.mac,
                        kind,
                        id,
                        i64::from(session.second_factor),
                        created_at,
                        last_seen_at
                    ])
                    .map_err(|e| classify(e, "session selector exists"))?;
                Ok(())
            })
            .await
    }

    async fn session(&self, selector: &str) -> Result<Option<SessionRecord>> {
        let selector = selector.to_owned();
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_SESSION).map_err(db)?;
                select
                    .query_row([selector], read_session)
                    .optional()
                    .map_err(db)
            })
            .await
    }

    async fn touch_session(&self, selector: &str, now: OffsetDateTime) -> Result<()> {
        let (selector, now) = (selector.to_owned(), bound_nanos(now));
        self.conn
            .run(move |conn| {
                let mut touch = conn.prepare_cached(sql::TOUCH_SESSION).map_err(db)?;
                touch.execute(params![selector, now]).map_err(db)?;
                Ok(())
            })
            .await
    }

    async fn delete_session(&self, selector: &str) -> Result<bool> {
        let selector = selector.to_owned();
        self.conn
            .run(move |conn| {
                let mut delete = conn.prepare_cached(sql::DELETE_SESSION).map_err(db)?;
                Ok(delete.execute([selector]).map_err(db)? > 0)
            })
            .await
    }

    async fn delete_sessions(&self, subject: Subject) -> Result<u64> {
        let (kind, id) = subject_key(subject);
        self.conn
            .run(move |conn| {
                let mut delete = conn
                    .prepare_cached(sql::DELETE_SUBJECT_SESSIONS)
                    .map_err(db)?;
                Ok(delete.execute(params![kind, id]).map_err(db)? as u64)
            })
            .await
    }

    async fn replace_session(&self, old: &str, new: &SessionRecord) -> Result<()> {
        let (kind, id) = subject_key(new.subject);
        let created_at = unix_nanos(new.created_at)?;
        let last_seen_at = unix_nanos(new.last_seen_at)?;
        let (old, new) = (old.to_owned(), new.clone());
        self.conn
            .run(move |conn| {
                // Delete, carry the SSO binding, insert: one transaction.
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(db)?;
                let bound: Option<Option<[u8; 16]>> = {
                    let mut take = tx.prepare_cached(sql::TAKE_SESSION_BINDING).map_err(db)?;
                    rusqlite::OptionalExtension::optional(take.query_row([&old], |row| row.get(0)))
                        .map_err(db)?
                };
                let Some(bound) = bound else {
                    return Err(leadmaps_core::Error::NotFound);
                };
                tx.prepare_cached(sql::INSERT_SSO_SESSION)
                    .map_err(db)?
                    .execute(params![
                        new.selector,
                        new.digest.key_id,
                        new.digest.mac,
                        kind,
                        id,
                        i64::from(new.second_factor),
                        created_at,
                        last_seen_at,
                        bound
                    ])
                    .map_err(|e| classify(e, "session selector exists"))?;
                tx.commit().map_err(db)
            })
            .await
    }

    async fn record_challenge_failure(&self, selector: &str) -> Result<u32> {
        let selector = selector.to_owned();
        self.conn
            .run(move |conn| {
                let mut record = conn
                    .prepare_cached(sql::RECORD_CHALLENGE_FAILURE)
                    .map_err(db)?;
                record
                    .query_row([selector], |row| row.get(0))
                    .optional()
                    .map_err(db)?
                    .ok_or(Error::NotFound)
            })
            .await
    }
}

/// Reads a recovery code's slot, salt and hash columns.
fn read_recovery_code(row: &Row<'_>) -> rusqlite::Result<(u32, RecoveryHash)> {
    Ok((
        row.get(0)?,
        RecoveryHash {
            salt: row.get(1)?,
            hash: row.get(2)?,
        },
    ))
}

#[async_trait]
impl RecoveryStore for SqliteStore {
    async fn put_recovery_codes(&self, subject: Subject, codes: &[RecoveryHash]) -> Result<()> {
        let (kind, id) = subject_key(subject);
        let codes = codes.to_vec();
        u32::try_from(codes.len()).map_err(|_| Error::invalid("too many recovery codes"))?;
        self.conn
            .run(move |conn| {
                // The old set goes and the new one comes in one transaction: never both, never
                // neither.
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db)?;
                {
                    let mut delete = tx.prepare_cached(sql::DELETE_RECOVERY_CODES).map_err(db)?;
                    delete.execute(params![kind, id]).map_err(db)?;
                    let mut insert = tx.prepare_cached(sql::INSERT_RECOVERY_CODE).map_err(db)?;
                    for (slot, code) in (0u32..).zip(&codes) {
                        insert
                            .execute(params![kind, id, slot, code.salt, code.hash])
                            .map_err(db)?;
                    }
                }
                tx.commit().map_err(db)
            })
            .await
    }

    async fn recovery_codes(&self, subject: Subject) -> Result<Vec<(u32, RecoveryHash)>> {
        let (kind, id) = subject_key(subject);
        self.conn
            .run(move |conn| {
                let mut select = conn
                    .prepare_cached(sql::SELECT_RECOVERY_CODES)
                    .map_err(db)?;
                select
                    .query_map(params![kind, id], read_recovery_code)
                    .map_err(db)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(db)
            })
            .await
    }

    async fn use_recovery_code(&self, subject: Subject, slot: u32) -> Result<bool> {
        let (kind, id) = subject_key(subject);
        self.conn
            .run(move |conn| {
                let mut used = conn.prepare_cached(sql::USE_RECOVERY_CODE).map_err(db)?;
                Ok(used.execute(params![kind, id, slot]).map_err(db)? == 1)
            })
            .await
    }
}

#[async_trait]
impl StepUpStore for SqliteStore {
    async fn grant_step_up(
        &self,
        staff: StaffId,
        action: SensitiveAction,
        expires_at: OffsetDateTime,
    ) -> Result<()> {
        let (id, expires_at) = (*staff.as_uuid().as_bytes(), unix_nanos(expires_at)?);
        self.conn
            .run(move |conn| {
                let mut insert = conn.prepare_cached(sql::INSERT_STEP_UP).map_err(db)?;
                insert
                    .execute(params![id, action.as_str(), expires_at])
                    .map_err(db)?;
                Ok(())
            })
            .await
    }

    async fn take_step_up(
        &self,
        staff: StaffId,
        action: SensitiveAction,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let (id, now) = (*staff.as_uuid().as_bytes(), bound_nanos(now));
        self.conn
            .run(move |conn| {
                let mut take = conn.prepare_cached(sql::TAKE_STEP_UP).map_err(db)?;
                Ok(take
                    .execute(params![id, action.as_str(), now])
                    .map_err(db)?
                    == 1)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_round_trip_and_unknown_ones_are_corrupt() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for realm in [Realm::Customer, Realm::Staff] {
            let back = conn
                .query_row("SELECT ?1", [realm_name(realm)], |row| get_realm(row, 0))
                .unwrap();
            assert_eq!(back, realm);
        }
        for subject in [Subject::User(UserId::new()), Subject::Staff(StaffId::new())] {
            let (kind, id) = subject_key(subject);
            let back = conn
                .query_row("SELECT ?1, ?2", params![kind, id], |row| {
                    get_subject(row, 0, 1)
                })
                .unwrap();
            assert_eq!(back, subject);
        }
        assert!(
            conn.query_row("SELECT 'Customer'", [], |row| get_realm(row, 0))
                .is_err()
        );
        assert!(
            conn.query_row("SELECT 'robot', zeroblob(16)", [], |row| {
                get_subject(row, 0, 1)
            })
            .is_err()
        );
        assert!(
            conn.query_row("SELECT 'Alice@Example.com '", [], |row| {
                get_address(row, 0)
            })
            .is_err()
        );
    }
}
