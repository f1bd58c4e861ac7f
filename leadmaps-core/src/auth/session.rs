//! Magic links and sessions.
//!
//! A magic link is a [`SplitToken`]: the row is found by its selector, and only an HMAC of its
//! verifier is stored, so a link read from a database dump cannot be used. Links live 10 minutes
//! and are consumed atomically, once. Opening the link (GET) must only show a confirmation page;
//! the POST that confirms consumes it, so mail scanners that fetch links do not log anyone in.
//!
//! Sessions are the same kind of token, sent as a `__Host-` cookie (HttpOnly, Secure,
//! SameSite=Lax), with an absolute and an idle timeout per realm (members 7 days / 24 hours,
//! staff 12 hours / 30 minutes), revocable one by one or all at once, and replaced on privilege
//! change.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};

use super::tokens::{SplitToken, TokenDigest, TokenHasher};
use super::totp::Subject;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::mail::Address;

/// Customers or staff: separate identities, separate policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Realm {
    /// Customer users.
    Customer,
    /// leadmaps staff.
    Staff,
}

impl Realm {
    /// (absolute, idle) session lifetimes.
    pub const fn session_lifetimes(self) -> (Duration, Duration) {
        match self {
            Realm::Customer => (Duration::days(7), Duration::hours(24)),
            Realm::Staff => (Duration::hours(12), Duration::minutes(30)),
        }
    }
}

/// How long a magic link is valid.
pub const LINK_TTL: Duration = Duration::minutes(10);
/// Least time between two links to one address.
pub const LINK_INTERVAL: Duration = Duration::seconds(60);
/// Most links to one address per hour.
pub const LINKS_PER_HOUR: u32 = 5;
/// Most link requests from one client address per five minutes.
pub const LINKS_PER_IP: usize = 30;
/// Wrong second-factor codes one sign-in may try before it has to start over.
pub const CHALLENGE_TRIES: u32 = 5;

/// A magic link as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MagicLink {
    /// Row key.
    pub selector: String,
    /// HMAC of the verifier.
    pub digest: TokenDigest,
    /// Who may use it.
    pub realm: Realm,
    /// Where it was sent.
    pub email: Address,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Row key.
    pub selector: String,
    /// HMAC of the verifier.
    pub digest: TokenDigest,
    /// Whose session.
    pub subject: Subject,
    /// Whether a second factor was passed in this session.
    pub second_factor: bool,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// Last use.
    pub last_seen_at: OffsetDateTime,
}

/// Storage of links and sessions. Every method is atomic on its own.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new link.
    async fn insert_link(&self, link: &MagicLink) -> Result<()>;
    /// A link by selector, without consuming it.
    async fn link(&self, selector: &str) -> Result<Option<MagicLink>>;
    /// Removes and returns the link if it exists and `now` is before its expiry: at most one
    /// caller ever gets a given link. MUST be atomic (delete ... returning, or equivalent).
    async fn take_link(&self, selector: &str, now: OffsetDateTime) -> Result<Option<MagicLink>>;
    /// Links sent to `email` since `since`: how many, and the latest creation time.
    async fn links_sent(
        &self,
        email: &Address,
        since: OffsetDateTime,
    ) -> Result<(u32, Option<OffsetDateTime>)>;
    /// Stores a new session.
    async fn insert_session(&self, session: &SessionRecord) -> Result<()>;
    /// A session by selector.
    async fn session(&self, selector: &str) -> Result<Option<SessionRecord>>;
    /// Records use.
    async fn touch_session(&self, selector: &str, now: OffsetDateTime) -> Result<()>;
    /// Deletes one session; whether it existed.
    async fn delete_session(&self, selector: &str) -> Result<bool>;
    /// Deletes every session of a subject; how many.
    async fn delete_sessions(&self, subject: Subject) -> Result<u64>;
    /// Counts one failed second-factor try against the session's challenge and returns the
    /// count so far. MUST be an atomic increment. [`Error::NotFound`] for an unknown session.
    async fn record_challenge_failure(&self, selector: &str) -> Result<u32>;

    /// Replaces session `old` by `new` (a privilege change) in one step. A store that binds
    /// sessions to a workspace (single sign-on, [`crate::sso`]) MUST carry the binding of `old`
    /// over to `new` atomically, so a rotation never turns a session bound to one workspace into
    /// an unbound one. The default, for stores without bindings, deletes and inserts.
    ///
    /// # Errors
    /// [`Error::NotFound`] when `old` no longer exists (it was revoked meanwhile): nothing is
    /// inserted.
    async fn replace_session(&self, old: &str, new: &SessionRecord) -> Result<()> {
        if !self.delete_session(old).await? {
            return Err(Error::NotFound);
        }
        self.insert_session(new).await
    }
}

/// Why a link or session was refused. Deliberately coarse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the link or session is invalid or has expired")]
pub struct Expired;

/// An authenticated session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its selector (for revocation).
    pub selector: String,
    /// Whose.
    pub subject: Subject,
    /// Whether it passed a second factor.
    pub second_factor: bool,
    /// When it ends at the latest.
    pub expires_at: OffsetDateTime,
}

/// Magic links and sessions over a [`SessionStore`].
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    hasher: TokenHasher,
    clock: Arc<dyn Clock>,
    per_ip: Mutex<HashMap<IpAddr, VecDeque<OffsetDateTime>>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// What a link request produced: the token to mail, if the limits allowed one.
pub struct IssuedLink {
    /// Where to send it.
    pub email: Address,
    /// The token (`<selector>.<verifier>`) for the link URL.
    pub token: SplitToken,
}

impl std::fmt::Debug for IssuedLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedLink")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Links and sessions with digests under `hasher`.
    pub fn new(store: Arc<dyn SessionStore>, hasher: TokenHasher, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            hasher,
            clock,
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    fn ip_allows(&self, ip: IpAddr, now: OffsetDateTime) -> bool {
        let mut map = self.per_ip.lock().expect("rate map");
        if map.len() > 100_000 {
            map.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now - *t < Duration::minutes(5))
            });
        }
        let times = map.entry(ip).or_default();
        while times
            .front()
            .is_some_and(|t| now - *t >= Duration::minutes(5))
        {
            times.pop_front();
        }
        if times.len() >= LINKS_PER_IP {
            return false;
        }
        times.push_back(now);
        true
    }

    /// Issues a link for `email` unless a limit says no (60 s between sends and 5 per hour per
    /// address, 30 per 5 minutes per client address). Whether the address belongs to anyone is
    /// the caller's business; answer every request the same way and send in the background.
    ///
    /// # Errors
    /// Store errors only; a refused request is `Ok(None)`.
    pub async fn request_link(
        &self,
        realm: Realm,
        email: &Address,
        ip: IpAddr,
    ) -> Result<Option<IssuedLink>> {
        let now = self.clock.now();
        if !self.ip_allows(ip, now) {
            return Ok(None);
        }
        let (count, latest) = self
            .store
            .links_sent(email, now - Duration::hours(1))
            .await?;
        if count >= LINKS_PER_HOUR || latest.is_some_and(|t| now - t < LINK_INTERVAL) {
            return Ok(None);
        }
        let token = SplitToken::generate();
        let link = MagicLink {
            selector: token.selector(),
            digest: self.hasher.digest(token.verifier()),
            realm,
            email: email.clone(),
            created_at: now,
            expires_at: now + LINK_TTL,
        };
        self.store.insert_link(&link).await?;
        Ok(Some(IssuedLink {
            email: email.clone(),
            token,
        }))
    }

    /// Consumes a link (the confirmation POST). Succeeds once, within 10 minutes, for the realm
    /// it was issued for.
    ///
    /// # Errors
    /// A bad, used, expired or foreign-realm link is [`Error::Invalid`], one message for all.
    pub async fn consume_link(&self, realm: Realm, token: &str) -> Result<MagicLink> {
        let refused = || Error::invalid(Expired.to_string());
        let token = SplitToken::parse(token).map_err(|_| refused())?;
        // Check first, then take: a wrong token never consumes someone's link.
        let stored = self
            .store
            .link(&token.selector())
            .await?
            .ok_or_else(refused)?;
        if stored.realm != realm || !self.hasher.verify(token.verifier(), &stored.digest) {
            return Err(refused());
        }
        self.store
            .take_link(&stored.selector, self.clock.now())
            .await?
            .ok_or_else(refused)
    }

    /// Starts a session; returns the token for the cookie (shown once) and the session.
    ///
    /// # Errors
    /// Store errors.
    pub async fn start(
        &self,
        subject: Subject,
        second_factor: bool,
    ) -> Result<(SplitToken, Session)> {
        let (token, record) = self.fresh(subject, second_factor);
        self.store.insert_session(&record).await?;
        let session = self.view(&record);
        Ok((token, session))
    }

    fn fresh(&self, subject: Subject, second_factor: bool) -> (SplitToken, SessionRecord) {
        let now = self.clock.now();
        let token = SplitToken::generate();
        let record = SessionRecord {
            selector: token.selector(),
            digest: self.hasher.digest(token.verifier()),
            subject,
            second_factor,
            created_at: now,
            last_seen_at: now,
        };
        (token, record)
    }

    fn realm(subject: Subject) -> Realm {
        match subject {
            Subject::User(_) => Realm::Customer,
            Subject::Staff(_) => Realm::Staff,
        }
    }

    fn view(&self, record: &SessionRecord) -> Session {
        let (absolute, idle) = Self::realm(record.subject).session_lifetimes();
        Session {
            selector: record.selector.clone(),
            subject: record.subject,
            second_factor: record.second_factor,
            expires_at: (record.created_at + absolute).min(record.last_seen_at + idle),
        }
    }

    /// Checks a session token from a cookie and records its use.
    ///
    /// # Errors
    /// [`Error::Invalid`] (one message) for a malformed, unknown, forged or expired session; an
    /// expired one is deleted.
    pub async fn authenticate(&self, token: &str) -> Result<Session> {
        let refused = || Error::invalid(Expired.to_string());
        let token = SplitToken::parse(token).map_err(|_| refused())?;
        let record = self
            .store
            .session(&token.selector())
            .await?
            .ok_or_else(refused)?;
        if !self.hasher.verify(token.verifier(), &record.digest) {
            return Err(refused());
        }
        let now = self.clock.now();
        let session = self.view(&record);
        if now >= session.expires_at {
            self.store.delete_session(&record.selector).await?;
            return Err(refused());
        }
        self.store.touch_session(&record.selector, now).await?;
        Ok(Session {
            expires_at: self
                .view(&SessionRecord {
                    last_seen_at: now,
                    ..record
                })
                .expires_at,
            ..session
        })
    }

    /// Replaces a session after a privilege change (a passed second factor, a new role): the old
    /// token stops working and a new one is issued, bound to the same workspace if single
    /// sign-on opened the old one ([`SessionStore::replace_session`]).
    ///
    /// # Errors
    /// [`Error::NotFound`] when the session was revoked meanwhile; store errors.
    pub async fn rotate(
        &self,
        session: &Session,
        second_factor: bool,
    ) -> Result<(SplitToken, Session)> {
        let (token, record) = self.fresh(session.subject, second_factor || session.second_factor);
        self.store
            .replace_session(&session.selector, &record)
            .await?;
        let session = self.view(&record);
        Ok((token, session))
    }

    /// Counts a wrong second-factor code in this session's challenge. Returns the tries left;
    /// at zero the session has been ended and sign-in starts over with a new link.
    ///
    /// # Errors
    /// Store errors.
    pub async fn challenge_failed(&self, session: &Session) -> Result<u32> {
        let failures = match self.store.record_challenge_failure(&session.selector).await {
            Ok(failures) => failures,
            Err(Error::NotFound) => CHALLENGE_TRIES,
            Err(error) => return Err(error),
        };
        if failures >= CHALLENGE_TRIES {
            self.store.delete_session(&session.selector).await?;
            return Ok(0);
        }
        Ok(CHALLENGE_TRIES - failures)
    }

    /// Ends one session.
    ///
    /// # Errors
    /// Store errors.
    pub async fn revoke(&self, selector: &str) -> Result<bool> {
        self.store.delete_session(selector).await
    }

    /// Ends every session of a subject.
    ///
    /// # Errors
    /// Store errors.
    pub async fn revoke_all(&self, subject: Subject) -> Result<u64> {
        self.store.delete_sessions(subject).await
    }
}

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "__Host-leadmaps_session";

/// The `Set-Cookie` value that removes the session cookie (sign-out).
pub const CLEAR_SESSION_COOKIE: &str =
    "__Host-leadmaps_session=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0";

/// The `Set-Cookie` value for a session token: `__Host-` prefix, HttpOnly, Secure,
/// SameSite=Lax, Path=/, and a Max-Age up to the session's end.
pub fn session_cookie(
    token: &SplitToken,
    session: &Session,
    now: OffsetDateTime,
) -> zeroize::Zeroizing<String> {
    let max_age = (session.expires_at - now).whole_seconds().max(0);
    zeroize::Zeroizing::new(format!(
        "{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}",
        &*token.expose()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::crypto::{Kek, KeyRing};
    use crate::memory::MemoryStore;
    use crate::tenancy::{StaffId, UserId};

    fn setup() -> (Arc<MemoryStore>, Arc<ManualClock>, Sessions) {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new(
            OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        ));
        let ring =
            KeyRing::new([Kek::new(1, &(0..32u8).map(|i| i ^ 0x33).collect::<Vec<_>>()).unwrap()])
                .unwrap();
        let sessions = Sessions::new(store.clone(), TokenHasher::new(&ring), clock.clone());
        (store, clock, sessions)
    }

    fn alice() -> Address {
        Address::parse("alice@example.com").unwrap()
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 4));

    #[tokio::test]
    async fn a_link_works_once_within_ten_minutes_and_not_from_a_dump() {
        let (store, clock, sessions) = setup();
        let issued = sessions
            .request_link(Realm::Customer, &alice(), IP)
            .await
            .unwrap()
            .unwrap();
        let token = issued.token.expose();
        // What a database dump holds (selector and digest) does not make a usable token.
        let stored = store.link(&issued.token.selector()).await.unwrap().unwrap();
        let forged = format!(
            "{}.{}",
            stored.selector,
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                stored.digest.mac
            )
        );
        assert!(
            sessions
                .consume_link(Realm::Customer, &forged)
                .await
                .is_err()
        );
        assert!(
            sessions.consume_link(Realm::Staff, &token).await.is_err(),
            "realms do not mix"
        );
        let link = sessions
            .consume_link(Realm::Customer, &token)
            .await
            .unwrap();
        assert_eq!(link.email, alice());
        assert!(
            sessions
                .consume_link(Realm::Customer, &token)
                .await
                .is_err(),
            "single use"
        );
        clock.advance(Duration::seconds(61));
        let late = sessions
            .request_link(Realm::Customer, &alice(), IP)
            .await
            .unwrap()
            .unwrap();
        clock.advance(LINK_TTL);
        assert!(
            sessions
                .consume_link(Realm::Customer, &late.token.expose())
                .await
                .is_err(),
            "expired"
        );
    }

    #[tokio::test]
    async fn parallel_consumption_succeeds_once() {
        let (_, _, sessions) = setup();
        let sessions = Arc::new(sessions);
        let token = sessions
            .request_link(Realm::Customer, &alice(), IP)
            .await
            .unwrap()
            .unwrap()
            .token
            .expose();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (sessions, token) = (sessions.clone(), token.clone());
                tokio::spawn(
                    async move { sessions.consume_link(Realm::Customer, &token).await.is_ok() },
                )
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            ok += usize::from(task.await.unwrap());
        }
        assert_eq!(ok, 1);
    }

    #[tokio::test]
    async fn send_limits_per_address_and_per_client() {
        let (_, clock, sessions) = setup();
        assert!(
            sessions
                .request_link(Realm::Customer, &alice(), IP)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            sessions
                .request_link(Realm::Customer, &alice(), IP)
                .await
                .unwrap()
                .is_none(),
            "60 s between sends"
        );
        for _ in 0..4 {
            clock.advance(Duration::seconds(60));
            assert!(
                sessions
                    .request_link(Realm::Customer, &alice(), IP)
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        clock.advance(Duration::seconds(60));
        assert!(
            sessions
                .request_link(Realm::Customer, &alice(), IP)
                .await
                .unwrap()
                .is_none(),
            "5 per hour"
        );
        let other_ip: IpAddr = "198.51.100.1".parse().unwrap();
        let mut sent = 0;
        for n in 0..40 {
            let email = Address::parse(&format!("u{n}@example.com")).unwrap();
            sent += usize::from(
                sessions
                    .request_link(Realm::Customer, &email, other_ip)
                    .await
                    .unwrap()
                    .is_some(),
            );
        }
        assert_eq!(sent, LINKS_PER_IP, "30 per 5 minutes per client");
    }

    #[tokio::test]
    async fn sessions_expire_idle_and_absolute_and_rotate() {
        let (_, clock, sessions) = setup();
        let user = Subject::User(UserId::new());
        let (token, _) = sessions.start(user, false).await.unwrap();
        let token = token.expose();
        assert_eq!(sessions.authenticate(&token).await.unwrap().subject, user);
        // Used every 23 hours, a member session still ends after 7 days.
        for _ in 0..8 {
            clock.advance(Duration::hours(23));
            if sessions.authenticate(&token).await.is_err() {
                break;
            }
        }
        assert!(
            sessions.authenticate(&token).await.is_err(),
            "absolute timeout"
        );
        let (idle, _) = sessions.start(user, false).await.unwrap();
        clock.advance(Duration::hours(24));
        assert!(
            sessions.authenticate(&idle.expose()).await.is_err(),
            "idle timeout"
        );
        let staff = Subject::Staff(StaffId::new());
        let (staff_token, session) = sessions.start(staff, false).await.unwrap();
        clock.advance(Duration::minutes(29));
        assert!(sessions.authenticate(&staff_token.expose()).await.is_ok());
        let (rotated, after) = sessions.rotate(&session, true).await.unwrap();
        assert!(after.second_factor);
        assert!(
            sessions.authenticate(&staff_token.expose()).await.is_err(),
            "the old token dies on rotation"
        );
        clock.advance(Duration::minutes(31));
        assert!(
            sessions.authenticate(&rotated.expose()).await.is_err(),
            "staff idle timeout is 30 minutes"
        );
    }

    #[tokio::test]
    async fn revocation_one_and_all() {
        let (_, _, sessions) = setup();
        let user = Subject::User(UserId::new());
        let (a, one) = sessions.start(user, false).await.unwrap();
        let (b, _) = sessions.start(user, false).await.unwrap();
        let (c, _) = sessions
            .start(Subject::User(UserId::new()), false)
            .await
            .unwrap();
        assert!(sessions.revoke(&one.selector).await.unwrap());
        assert!(sessions.authenticate(&a.expose()).await.is_err());
        assert!(sessions.authenticate(&b.expose()).await.is_ok());
        assert_eq!(sessions.revoke_all(user).await.unwrap(), 1);
        assert!(sessions.authenticate(&b.expose()).await.is_err());
        assert!(
            sessions.authenticate(&c.expose()).await.is_ok(),
            "other people's sessions stay"
        );
    }

    #[tokio::test]
    async fn the_cookie_is_host_only_http_only_secure_lax() {
        let (_, clock, sessions) = setup();
        let (token, session) = sessions
            .start(Subject::User(UserId::new()), false)
            .await
            .unwrap();
        let cookie = session_cookie(&token, &session, clock.now());
        assert!(cookie.starts_with("__Host-leadmaps_session="));
        assert!(
            cookie.ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=86400"),
            "{}",
            *cookie
        );
    }
}
