//! Authentication state: TOTP factors, magic links and sessions (migration V4), staff step-up
//! grants (migration V6), and a factor's confirmation and a session's challenge tries (V8).
//!
//! These are identity tables, not customer data: no `workspace_id`, no scope, no row-level
//! security (see the README). Every method is one statement in its own implicit transaction, and
//! the ones that must be atomic are atomic in the statement itself:
//!
//! - `claim_totp_step` is a compare-and-set `UPDATE ... WHERE last_step IS NULL OR last_step < $step`.
//!   Concurrent claims of one step queue on the row lock; each waiter re-checks the condition
//!   against the committed row (READ COMMITTED re-evaluation), so exactly one of them updates it;
//! - `take_link` is `DELETE ... WHERE selector = $1 AND expires_at > $now RETURNING ...`: of any
//!   number of concurrent takers, the first deletes the row and the others find none;
//! - `record_totp_failure` increments and locks in one `UPDATE ... RETURNING`;
//! - `touch_session` only moves `last_seen_at` forward (`GREATEST`);
//! - `record_challenge_failure` increments the session's count in one `UPDATE ... RETURNING`;
//! - `take_step_up` picks the live grant that expires first and deletes it by id in one
//!   statement. Concurrent takers of one grant queue on its row lock; the first deletes it and
//!   every other finds it gone and deletes nothing, so one grant is used once. A taker that lost
//!   its pick to another while a second grant was live tries again with a fresh snapshot.

use async_trait::async_trait;
use leadmaps_core::auth::session::{MagicLink, Realm, SessionRecord, SessionStore};
use leadmaps_core::auth::staff::{SensitiveAction, StepUpStore};
use leadmaps_core::auth::tokens::TokenDigest;
use leadmaps_core::auth::totp::{Subject, TotpFactor, TotpStore};
use leadmaps_core::mail::Address;
use leadmaps_core::tenancy::{StaffId, UserId};
use leadmaps_core::{Error, Result};
use time::{Duration, OffsetDateTime};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::{internal, pg, pg_conflict};
use crate::store::{PostgresStore, to_u32};

/// The key columns of a subject: its kind (`user` or `staff`) and id.
pub(crate) fn subject_key(subject: Subject) -> (&'static str, Uuid) {
    match subject {
        Subject::User(user) => ("user", *user.as_uuid()),
        Subject::Staff(staff) => ("staff", *staff.as_uuid()),
    }
}

fn subject_from(kind: &str, id: Uuid) -> Result<Subject> {
    match kind {
        "user" => Ok(Subject::User(UserId::from_uuid(id))),
        "staff" => Ok(Subject::Staff(StaffId::from_uuid(id))),
        _ => Err(internal("a stored subject kind is unknown")),
    }
}

fn realm_str(realm: Realm) -> &'static str {
    match realm {
        Realm::Customer => "customer",
        Realm::Staff => "staff",
    }
}

fn realm_from(text: &str) -> Result<Realm> {
    match text {
        "customer" => Ok(Realm::Customer),
        "staff" => Ok(Realm::Staff),
        _ => Err(internal("a stored realm is unknown")),
    }
}

fn step_param(step: u64) -> Result<i64> {
    i64::try_from(step).map_err(|_| Error::invalid("TOTP step out of range"))
}

pub(crate) fn digest_from(row: &Row) -> Result<TokenDigest> {
    let mac: Vec<u8> = row.try_get("digest_mac").map_err(pg)?;
    Ok(TokenDigest {
        key_id: to_u32(row.try_get("digest_key_id").map_err(pg)?)?,
        mac: mac
            .try_into()
            .map_err(|_| internal("a stored token digest has the wrong length"))?,
    })
}

fn factor_from(row: &Row) -> Result<TotpFactor> {
    let last_step: Option<i64> = row.try_get("last_step").map_err(pg)?;
    let failures: i32 = row.try_get("failures").map_err(pg)?;
    Ok(TotpFactor {
        subject: subject_from(
            row.try_get("subject_kind").map_err(pg)?,
            row.try_get("subject_id").map_err(pg)?,
        )?,
        sealed_seed: row.try_get("sealed_seed").map_err(pg)?,
        last_step: last_step
            .map(u64::try_from)
            .transpose()
            .map_err(|_| internal("a stored TOTP step is negative"))?,
        failures: to_u32(failures.into())?,
        locked_until: row.try_get("locked_until").map_err(pg)?,
        confirmed: row.try_get("confirmed").map_err(pg)?,
    })
}

const LINK_COLUMNS: &str =
    "selector, digest_key_id, digest_mac, realm, email, created_at, expires_at";

fn link_from(row: &Row) -> Result<MagicLink> {
    Ok(MagicLink {
        selector: row.try_get("selector").map_err(pg)?,
        digest: digest_from(row)?,
        realm: realm_from(row.try_get("realm").map_err(pg)?)?,
        email: Address::parse(row.try_get("email").map_err(pg)?)
            .map_err(|_| internal("a stored e-mail address does not parse"))?,
        created_at: row.try_get("created_at").map_err(pg)?,
        expires_at: row.try_get("expires_at").map_err(pg)?,
    })
}

const SESSION_COLUMNS: &str = "selector, digest_key_id, digest_mac, subject_kind, subject_id, second_factor, created_at, last_seen_at";

fn session_from(row: &Row) -> Result<SessionRecord> {
    Ok(SessionRecord {
        selector: row.try_get("selector").map_err(pg)?,
        digest: digest_from(row)?,
        subject: subject_from(
            row.try_get("subject_kind").map_err(pg)?,
            row.try_get("subject_id").map_err(pg)?,
        )?,
        second_factor: row.try_get("second_factor").map_err(pg)?,
        created_at: row.try_get("created_at").map_err(pg)?,
        last_seen_at: row.try_get("last_seen_at").map_err(pg)?,
    })
}

#[async_trait]
impl TotpStore for PostgresStore {
    async fn put_totp(&self, factor: &TotpFactor) -> Result<()> {
        let (kind, subject) = subject_key(factor.subject);
        let last_step = factor.last_step.map(step_param).transpose()?;
        let failures = i32::try_from(factor.failures)
            .map_err(|_| Error::invalid("failure count too large"))?;
        let client = self.client().await?;
        let upsert = client
            .prepare_cached(
                "INSERT INTO leadmaps.totp_factors
                     (subject_kind, subject_id, sealed_seed, last_step, failures, locked_until,
                      confirmed)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (subject_kind, subject_id) DO UPDATE SET
                     sealed_seed = EXCLUDED.sealed_seed, last_step = EXCLUDED.last_step,
                     failures = EXCLUDED.failures, locked_until = EXCLUDED.locked_until,
                     confirmed = EXCLUDED.confirmed",
            )
            .await
            .map_err(pg)?;
        client
            .execute(
                &upsert,
                &[
                    &kind,
                    &subject,
                    &factor.sealed_seed,
                    &last_step,
                    &failures,
                    &factor.locked_until,
                    &factor.confirmed,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn totp(&self, subject: Subject) -> Result<Option<TotpFactor>> {
        let (kind, subject) = subject_key(subject);
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT subject_kind, subject_id, sealed_seed, last_step, failures, locked_until,
                        confirmed
                 FROM leadmaps.totp_factors WHERE subject_kind = $1 AND subject_id = $2",
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_opt(&select, &[&kind, &subject])
            .await
            .map_err(pg)?;
        row.as_ref().map(factor_from).transpose()
    }

    async fn claim_totp_step(&self, subject: Subject, step: u64) -> Result<bool> {
        let (kind, subject) = subject_key(subject);
        let step = step_param(step)?;
        let client = self.client().await?;
        // The compare-and-set is the UPDATE alone; the second EXISTS only tells "lost" (false)
        // from "no such factor" (NotFound) in the same round trip. The app role cannot delete a
        // factor, so a factor seen by the statement's snapshot still exists.
        let claim = client
            .prepare_cached(
                "WITH claimed AS (
                     UPDATE leadmaps.totp_factors
                     SET last_step = $3::bigint, failures = 0, locked_until = NULL
                     WHERE subject_kind = $1 AND subject_id = $2
                       AND (last_step IS NULL OR last_step < $3::bigint)
                     RETURNING 1
                 )
                 SELECT EXISTS (SELECT FROM claimed),
                        EXISTS (SELECT FROM leadmaps.totp_factors
                                WHERE subject_kind = $1 AND subject_id = $2)",
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_one(&claim, &[&kind, &subject, &step])
            .await
            .map_err(pg)?;
        let (won, exists): (bool, bool) =
            (row.try_get(0).map_err(pg)?, row.try_get(1).map_err(pg)?);
        if won {
            Ok(true)
        } else if exists {
            Ok(false)
        } else {
            Err(Error::NotFound)
        }
    }

    async fn record_totp_failure(
        &self,
        subject: Subject,
        now: OffsetDateTime,
        lock_after: u32,
        lock_for: Duration,
    ) -> Result<u32> {
        let (kind, subject) = subject_key(subject);
        let until = now
            .checked_add(lock_for)
            .ok_or_else(|| Error::invalid("lock end out of range"))?;
        let client = self.client().await?;
        // The count saturates at the largest integer instead of overflowing.
        let fail = client
            .prepare_cached(
                "UPDATE leadmaps.totp_factors
                 SET failures = LEAST(failures, 2147483646) + 1,
                     locked_until = CASE WHEN LEAST(failures, 2147483646) + 1 >= $3::bigint
                                         THEN $4::timestamptz ELSE locked_until END
                 WHERE subject_kind = $1 AND subject_id = $2
                 RETURNING failures",
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_opt(&fail, &[&kind, &subject, &i64::from(lock_after), &until])
            .await
            .map_err(pg)?
            .ok_or(Error::NotFound)?;
        let failures: i32 = row.try_get(0).map_err(pg)?;
        to_u32(failures.into())
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn insert_link(&self, link: &MagicLink) -> Result<()> {
        let client = self.client().await?;
        let insert = client
            .prepare_cached(&format!(
                "INSERT INTO leadmaps.magic_links ({LINK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ))
            .await
            .map_err(pg)?;
        client
            .execute(
                &insert,
                &[
                    &link.selector,
                    &i64::from(link.digest.key_id),
                    &&link.digest.mac[..],
                    &realm_str(link.realm),
                    &link.email.as_str(),
                    &link.created_at,
                    &link.expires_at,
                ],
            )
            .await
            .map_err(|e| pg_conflict(e, "link selector exists"))?;
        Ok(())
    }

    async fn link(&self, selector: &str) -> Result<Option<MagicLink>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {LINK_COLUMNS} FROM leadmaps.magic_links WHERE selector = $1"
            ))
            .await
            .map_err(pg)?;
        let row = client.query_opt(&select, &[&selector]).await.map_err(pg)?;
        row.as_ref().map(link_from).transpose()
    }

    async fn take_link(&self, selector: &str, now: OffsetDateTime) -> Result<Option<MagicLink>> {
        let client = self.client().await?;
        let take = client
            .prepare_cached(&format!(
                "DELETE FROM leadmaps.magic_links WHERE selector = $1 AND expires_at > $2
                 RETURNING {LINK_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = client
            .query_opt(&take, &[&selector, &now])
            .await
            .map_err(pg)?;
        row.as_ref().map(link_from).transpose()
    }

    async fn links_sent(
        &self,
        email: &Address,
        since: OffsetDateTime,
    ) -> Result<(u32, Option<OffsetDateTime>)> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT count(*), max(created_at) FROM leadmaps.magic_links
                 WHERE email = $1 AND created_at >= $2",
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_one(&select, &[&email.as_str(), &since])
            .await
            .map_err(pg)?;
        Ok((
            to_u32(row.try_get(0).map_err(pg)?)?,
            row.try_get(1).map_err(pg)?,
        ))
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<()> {
        let (kind, subject) = subject_key(session.subject);
        let client = self.client().await?;
        let insert = client
            .prepare_cached(&format!(
                "INSERT INTO leadmaps.sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ))
            .await
            .map_err(pg)?;
        client
            .execute(
                &insert,
                &[
                    &session.selector,
                    &i64::from(session.digest.key_id),
                    &&session.digest.mac[..],
                    &kind,
                    &subject,
                    &session.second_factor,
                    &session.created_at,
                    &session.last_seen_at,
                ],
            )
            .await
            .map_err(|e| pg_conflict(e, "session selector exists"))?;
        Ok(())
    }

    async fn session(&self, selector: &str) -> Result<Option<SessionRecord>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM leadmaps.sessions WHERE selector = $1"
            ))
            .await
            .map_err(pg)?;
        let row = client.query_opt(&select, &[&selector]).await.map_err(pg)?;
        row.as_ref().map(session_from).transpose()
    }

    async fn touch_session(&self, selector: &str, now: OffsetDateTime) -> Result<()> {
        let client = self.client().await?;
        // Only forward; a touch that would not move it writes nothing (no dead row per request).
        let touch = client
            .prepare_cached(
                "UPDATE leadmaps.sessions SET last_seen_at = GREATEST(last_seen_at, $2)
                 WHERE selector = $1 AND last_seen_at < $2",
            )
            .await
            .map_err(pg)?;
        client
            .execute(&touch, &[&selector, &now])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn delete_session(&self, selector: &str) -> Result<bool> {
        let client = self.client().await?;
        let delete = client
            .prepare_cached("DELETE FROM leadmaps.sessions WHERE selector = $1")
            .await
            .map_err(pg)?;
        let deleted = client.execute(&delete, &[&selector]).await.map_err(pg)?;
        Ok(deleted > 0)
    }

    async fn delete_sessions(&self, subject: Subject) -> Result<u64> {
        let (kind, subject) = subject_key(subject);
        let client = self.client().await?;
        let delete = client
            .prepare_cached(
                "DELETE FROM leadmaps.sessions WHERE subject_kind = $1 AND subject_id = $2",
            )
            .await
            .map_err(pg)?;
        client
            .execute(&delete, &[&kind, &subject])
            .await
            .map_err(pg)
    }

    async fn replace_session(&self, old: &str, new: &SessionRecord) -> Result<()> {
        let (kind, subject) = subject_key(new.subject);
        let mut client = self.client().await?;
        // Delete, carry the SSO binding, insert: one transaction.
        let tx = client.transaction().await.map_err(pg)?;
        let take = tx
            .prepare_cached(
                "DELETE FROM leadmaps.sessions WHERE selector = $1 RETURNING sso_workspace",
            )
            .await
            .map_err(pg)?;
        let Some(row) = tx.query_opt(&take, &[&old]).await.map_err(pg)? else {
            return Err(leadmaps_core::Error::NotFound);
        };
        let bound: Option<Uuid> = row.try_get(0).map_err(pg)?;
        let insert = tx
            .prepare_cached(&format!(
                "INSERT INTO leadmaps.sessions ({SESSION_COLUMNS}, sso_workspace)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .await
            .map_err(pg)?;
        tx.execute(
            &insert,
            &[
                &new.selector,
                &i64::from(new.digest.key_id),
                &&new.digest.mac[..],
                &kind,
                &subject,
                &new.second_factor,
                &new.created_at,
                &new.last_seen_at,
                &bound,
            ],
        )
        .await
        .map_err(|e| pg_conflict(e, "session selector exists"))?;
        tx.commit().await.map_err(pg)
    }

    async fn record_challenge_failure(&self, selector: &str) -> Result<u32> {
        let client = self.client().await?;
        // Concurrent tries queue on the row lock and each adds one to the committed count. The
        // count saturates at the largest integer instead of overflowing.
        let fail = client
            .prepare_cached(
                "UPDATE leadmaps.sessions
                 SET challenge_failures = LEAST(challenge_failures, 2147483646) + 1
                 WHERE selector = $1
                 RETURNING challenge_failures",
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_opt(&fail, &[&selector])
            .await
            .map_err(pg)?
            .ok_or(Error::NotFound)?;
        let failures: i32 = row.try_get(0).map_err(pg)?;
        to_u32(failures.into())
    }
}

/// Statements a `take_step_up` may run: the first, and retries after losing its pick to a
/// concurrent taker (each retry means another taker consumed a grant meanwhile).
const STEP_UP_ATTEMPTS: u32 = 8;

#[async_trait]
impl StepUpStore for PostgresStore {
    async fn grant_step_up(
        &self,
        staff: StaffId,
        action: SensitiveAction,
        expires_at: OffsetDateTime,
    ) -> Result<()> {
        let client = self.client().await?;
        let insert = client
            .prepare_cached(
                "INSERT INTO leadmaps.step_up_grants (id, staff_id, action, expires_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .await
            .map_err(pg)?;
        client
            .execute(
                &insert,
                &[
                    &Uuid::new_v4(),
                    staff.as_uuid(),
                    &action.as_str(),
                    &expires_at,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn take_step_up(
        &self,
        staff: StaffId,
        action: SensitiveAction,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let client = self.client().await?;
        // One statement: the DELETE takes the picked row's lock and re-checks it after any
        // concurrent taker commits, so a row is deleted (and reported) at most once. No
        // `FOR UPDATE` in the pick: locking a row in a SELECT needs an UPDATE privilege, which
        // the app role does not hold on this table. The second column tells "nothing live"
        // (false) from "lost the pick to a concurrent taker" (try again: another grant may be
        // live).
        let take = client
            .prepare_cached(
                "WITH picked AS (
                     SELECT id FROM leadmaps.step_up_grants
                     WHERE staff_id = $1 AND action = $2 AND expires_at > $3
                     ORDER BY expires_at LIMIT 1
                 ), taken AS (
                     DELETE FROM leadmaps.step_up_grants AS g USING picked
                     WHERE g.id = picked.id
                     RETURNING g.id
                 )
                 SELECT EXISTS (SELECT FROM taken), EXISTS (SELECT FROM picked)",
            )
            .await
            .map_err(pg)?;
        for _ in 0..STEP_UP_ATTEMPTS {
            let row = client
                .query_one(&take, &[staff.as_uuid(), &action.as_str(), &now])
                .await
                .map_err(pg)?;
            let (taken, picked): (bool, bool) =
                (row.try_get(0).map_err(pg)?, row.try_get(1).map_err(pg)?);
            if taken {
                return Ok(true);
            }
            if !picked {
                return Ok(false);
            }
        }
        // Lost every pick to concurrent takers: refusing is the safe answer.
        Ok(false)
    }
}
