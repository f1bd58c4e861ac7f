//! Pseudonymous visitors: a keyed hash of workspace, IP and user agent under a random daily salt.
//!
//! Salts are per workspace and UTC day, random, stored sealed under the workspace's tenant key
//! (so every collector instance shares them and a database dump cannot recompute visitor ids).
//! A salt serves its own day, is kept one more day so sessions crossing midnight can be matched,
//! and is destroyed 48 hours after its day began; each destruction is recorded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use time::{Date, OffsetDateTime};
use zeroize::Zeroizing;

use super::event::VisitorId;
use crate::clock::Clock;
use crate::crypto::{Purpose, SecretContext, Vault};
use crate::error::{Error, Result};
use crate::store::{SaltStore, StoredSalt};
use crate::tenancy::{Action, Gate, Principal, Scope, SystemTask, WorkspaceId};

/// Domain separation for the visitor hash.
const LABEL: &[u8] = b"leadmaps/visitor/v1";
const PAGE: u32 = 100;

/// A day's salt, zeroized on drop.
pub type Salt = Zeroizing<[u8; 32]>;

/// The visitor id of a client under a salt. The IP is hashed in its 16-byte IPv6 form (IPv4 as
/// mapped), and every input is length-prefixed, so no two inputs collide by concatenation.
pub fn visitor_id(
    salt: &[u8; 32],
    workspace: WorkspaceId,
    ip: IpAddr,
    user_agent: &str,
) -> VisitorId {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(LABEL);
    mac.update(workspace.as_uuid().as_bytes());
    let ip = match super::bot::canonical_ip(ip) {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    mac.update(&ip.octets());
    mac.update(&(user_agent.len() as u64).to_be_bytes());
    mac.update(user_agent.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    VisitorId(id)
}

fn salt_context(workspace: WorkspaceId, day: &str) -> SecretContext<'_> {
    SecretContext::new(
        workspace,
        "visitor_salts",
        "salt",
        day,
        Purpose::VisitorSalt,
    )
}

/// The salts a collector hashes with now.
#[derive(Clone)]
pub struct DaySalts {
    /// Today's (UTC) salt: new visitor ids use it.
    pub today: Arc<Salt>,
    /// Yesterday's, if it still exists: for matching sessions that crossed midnight.
    pub yesterday: Option<Arc<Salt>>,
}

impl std::fmt::Debug for DaySalts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DaySalts([REDACTED])")
    }
}

/// Daily salts: created on first use, cached in process for their day, destroyed after 48 hours.
pub struct Salts {
    vault: Arc<Vault>,
    store: Arc<dyn SaltStore>,
    clock: Arc<dyn Clock>,
    cache: Mutex<HashMap<(WorkspaceId, Date), Arc<Salt>>>,
}

impl std::fmt::Debug for Salts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Salts").finish_non_exhaustive()
    }
}

impl Salts {
    /// Salts over a vault and a store.
    pub fn new(vault: Arc<Vault>, store: Arc<dyn SaltStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            vault,
            store,
            clock,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Today's and yesterday's salts of the scope's workspace; today's is created if missing.
    ///
    /// # Errors
    /// Store and vault errors.
    pub async fn current(&self, scope: &Scope) -> Result<DaySalts> {
        let today = self.clock.now().date();
        let yesterday = today
            .previous_day()
            .expect("not the first day of the calendar");
        let workspace = scope.workspace();
        let cached = |day| {
            self.cache
                .lock()
                .expect("salt cache")
                .get(&(workspace, day))
                .cloned()
        };
        if let (Some(t), y) = (cached(today), cached(yesterday)) {
            return Ok(DaySalts {
                today: t,
                yesterday: y,
            });
        }
        let mut found = HashMap::new();
        for stored in self.store.salts(scope, &[today, yesterday]).await? {
            found.insert(stored.day, self.open(scope, &stored).await?);
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = found.entry(today) {
            slot.insert(self.create(scope, today).await?);
        }
        let mut cache = self.cache.lock().expect("salt cache");
        // Forget salts of days that are over, so destroyed salts leave memory too.
        cache.retain(|(_, day), _| *day >= yesterday);
        for (day, salt) in &found {
            cache.insert((workspace, *day), salt.clone());
        }
        Ok(DaySalts {
            today: found[&today].clone(),
            yesterday: found.get(&yesterday).cloned(),
        })
    }

    async fn open(&self, scope: &Scope, stored: &StoredSalt) -> Result<Arc<Salt>> {
        let day = stored.day.to_string();
        let plain = self
            .vault
            .open(scope, &salt_context(scope.workspace(), &day), &stored.blob)
            .await?;
        let bytes: [u8; 32] = plain.expose().try_into().map_err(|_| Error::Decrypt)?;
        Ok(Arc::new(Zeroizing::new(bytes)))
    }

    async fn create(&self, scope: &Scope, day: Date) -> Result<Arc<Salt>> {
        let mut salt = Zeroizing::new([0u8; 32]);
        getrandom::fill(salt.as_mut())
            .expect("the operating system's random number generator failed");
        let label = day.to_string();
        let blob = self
            .vault
            .seal(scope, &salt_context(scope.workspace(), &label), &salt[..])
            .await?;
        match self
            .store
            .insert_salt(scope, &StoredSalt { day, blob })
            .await
        {
            Ok(()) => Ok(Arc::new(salt)),
            Err(Error::Conflict(_)) => {
                // Another instance made today's salt first: use theirs.
                let stored = self.store.salts(scope, &[day]).await?;
                let stored = stored.first().ok_or(Error::Conflict("salt vanished"))?;
                self.open(scope, stored).await
            }
            Err(e) => Err(e),
        }
    }

    /// Destroys every salt whose day began 48 hours or more ago, in every workspace, recording
    /// each destruction. Returns how many were destroyed.
    ///
    /// # Errors
    /// Store errors; a partial run is safe to repeat.
    pub async fn destroy_expired(&self, gate: &Gate) -> Result<u64> {
        let now = self.clock.now();
        // Days before yesterday began 48 hours or more ago.
        let before = now.date().previous_day().expect("calendar");
        let principal = Principal::System(SystemTask::SaltRotation);
        let mut destroyed = 0;
        let mut after = None;
        loop {
            let page = self
                .store
                .workspaces_with_salts_before(before, after, PAGE)
                .await?;
            let Some(last) = page.last().copied() else {
                break;
            };
            for workspace in page {
                let scope = gate.authorize(&principal, workspace, Action::KeyManage)?;
                destroyed += self
                    .store
                    .destroy_salts_before(&scope, before, now)
                    .await?
                    .len() as u64;
            }
            after = Some(last);
        }
        self.cache
            .lock()
            .expect("salt cache")
            .retain(|(_, day), _| *day >= before);
        Ok(destroyed)
    }
}

/// Midnight UTC at the start of `day`.
pub fn day_start(day: Date) -> OffsetDateTime {
    day.midnight().assume_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visitor_ids_depend_on_every_input() {
        let salt = [1u8; 32];
        let ws = WorkspaceId::from_uuid(uuid::Uuid::from_u128(1));
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let base = visitor_id(&salt, ws, ip, "UA");
        assert_eq!(base, visitor_id(&salt, ws, ip, "UA"));
        assert_eq!(
            base,
            visitor_id(&salt, ws, "::ffff:203.0.113.9".parse().unwrap(), "UA")
        );
        assert_ne!(base, visitor_id(&[2u8; 32], ws, ip, "UA"));
        assert_ne!(
            base,
            visitor_id(
                &salt,
                WorkspaceId::from_uuid(uuid::Uuid::from_u128(2)),
                ip,
                "UA"
            )
        );
        assert_ne!(
            base,
            visitor_id(&salt, ws, "203.0.113.10".parse().unwrap(), "UA")
        );
        assert_ne!(base, visitor_id(&salt, ws, ip, "UA2"));
    }
}
