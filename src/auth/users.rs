//! Who the caller is: the static `users` of a docker_auth config (and the htpasswd file
//! and robots merged into it), bcrypt passwords, and a cache of verified credentials so
//! bcrypt runs once per user and password per interval. The first login backend of the
//! chain (`backend.rs`): a name the list lacks is the next backend's to judge.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::acl::{Acl, Labels};
use crate::metrics::Metrics;

use super::backend::{Authenticator, BoxFuture, Verdict};
use super::identity::{AuthnError, Backend, Identity};
use super::pool::Pool;
use super::{CredentialKey, Secret};

/// Salt and hash (after `$2y$NN$`) of nothing anyone knows. An unknown user is checked
/// against it, at the cost [`dummy_cost`] picks, so it costs what a wrong password costs.
/// bcrypt takes the cost from the string and runs that many rounds before comparing;
/// with another cost written in, the hash simply never matches, which is all a dummy must
/// do. So no hash is computed at load.
const DUMMY_SALT_AND_HASH: &str = "anBp7B2A9q1pD2RH5HNv.urpHrlEejsIuxO4vSNsVJ02mj9/kEfzi";
/// The dummy's cost when no account has a bcrypt secret (bcrypt's usual cost).
const DEFAULT_DUMMY_COST: u32 = 10;

/// The bcrypt cost the unknown-user check pays: the most common cost among the accounts'
/// secrets (`users`, `htpasswd`, `robots`), the higher one on a tie.
///
/// An attacker tells "no such account" from "wrong password" by timing one against the
/// other. What an unknown name is compared with is a typical account, so it must cost
/// what most accounts cost. The highest cost would make every unknown name slower than
/// all the accounts at the common cost, and so tell those accounts apart (100 users at
/// `htpasswd -B`'s 5 and an admin at 12: unknown names at 12 would be 128 times slower
/// than a wrong password for any of the 100). With mixed costs, the accounts at a rarer
/// cost stay distinguishable whatever is chosen; the most common cost hides the most.
pub fn dummy_cost<'a>(hashes: impl IntoIterator<Item = &'a str>) -> u32 {
    let mut counts = std::collections::BTreeMap::<u32, usize>::new();
    for cost in hashes.into_iter().filter_map(bcrypt_cost) {
        *counts.entry(cost).or_default() += 1;
    }
    // BTreeMap iterates by cost, and max_by_key keeps the last maximum: ties go up.
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or(DEFAULT_DUMMY_COST, |(cost, _)| cost)
}

/// The cost field of a bcrypt hash (`$2y$05$...` -> 5).
pub fn bcrypt_cost(hash: &str) -> Option<u32> {
    if !is_bcrypt(hash) {
        return None;
    }
    hash.get(4..6)?.parse().ok()
}

fn dummy_hash(cost: u32) -> String {
    format!("$2y${cost:02}${DUMMY_SALT_AND_HASH}")
}

#[derive(Clone)]
pub struct User {
    /// bcrypt (`$2a$`, `$2b$`, `$2y$`); `None` only for the anonymous `""` entry.
    pub password_hash: Option<String>,
    /// Shared among the users with the same labels (a team's members have one set).
    pub labels: Arc<Labels>,
    /// Set for a robot account: a credential for CI with its own rules and an end.
    pub robot: Option<Robot>,
    /// Where the config got it from.
    pub backend: Backend,
}

/// What makes a robot account different from a user.
#[derive(Clone)]
pub struct Robot {
    /// After this, its secret no longer logs in.
    pub expires: Option<std::time::SystemTime>,
    /// The only rules it is ever judged by (the global `acl` is not consulted).
    pub acl: Arc<Acl>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("labels", &self.labels)
            .field("robot", &self.robot.is_some())
            .field("backend", &self.backend)
            .finish()
    }
}

/// The identity of a user in the list.
fn identity(name: &str, user: &User) -> Identity {
    Identity {
        account: name.to_owned(),
        labels: Labels::clone(&user.labels),
        acl: user.robot.as_ref().map(|r| r.acl.clone()),
        backend: user.backend,
    }
}

/// Credentials bcrypt said yes to, for a while: keyed hashes of (name, password, stored
/// hash), never the password. Carried across reloads (in `runtime::Lasting`): an entry
/// only matches the stored hash it was checked against, so a changed password misses, and
/// a reload does not send every client's next token request through bcrypt at once (it
/// did: /auth's p99 went from 7 to 98 ms with a reload every 2 s).
pub struct Verified {
    cache: moka::sync::Cache<[u8; 32], ()>,
    key: CredentialKey,
}

impl Verified {
    pub fn new(ttl: Duration) -> Verified {
        Verified {
            cache: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            key: CredentialKey::generate(),
        }
    }
}

pub struct Users {
    /// The config's own map, shared.
    users: Arc<HashMap<String, User>>,
    /// What an unknown name is checked against (see [`dummy_cost`]).
    dummy_hash: String,
    verified: Arc<Verified>,
    metrics: Arc<Metrics>,
    /// Where bcrypt runs, bounded (shared across reloads: see [`Users::with_pool`]).
    pool: Arc<Pool>,
}

impl Users {
    pub fn new(
        users: impl Into<Arc<HashMap<String, User>>>,
        cache_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Users {
        let users = users.into();
        let cost = dummy_cost(users.values().filter_map(|u| u.password_hash.as_deref()));
        Users {
            users,
            dummy_hash: dummy_hash(cost),
            verified: Arc::new(Verified::new(cache_ttl)),
            metrics,
            pool: Arc::default(),
        }
    }

    /// Runs bcrypt in `pool` (the one the previous runtime used, so a reload does not
    /// reset the bound).
    pub fn with_pool(mut self, pool: Arc<Pool>) -> Users {
        self.pool = pool;
        self
    }

    /// Remembers verified credentials in `verified` (the previous runtime's: see
    /// [`Verified`]).
    pub fn with_verified(mut self, verified: Arc<Verified>) -> Users {
        self.verified = verified;
        self
    }

    /// Whether this name and password were verified within the cache TTL: a login that
    /// costs no bcrypt and is no guess.
    pub fn is_known(&self, name: &str, password: &Secret) -> bool {
        self.users.get(name).is_some_and(|user| {
            user.password_hash.as_deref().is_some_and(|hash| {
                self.verified
                    .cache
                    .contains_key(&self.cache_key(name, password, hash))
            })
        })
    }

    /// The hash an unknown name is checked against.
    pub fn dummy_hash(&self) -> &str {
        &self.dummy_hash
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// The anonymous caller, if `users` has docker_auth's `"": {}` entry.
    pub fn anonymous(&self) -> Result<Identity, AuthnError> {
        match self.users.get("") {
            Some(user) => Ok(identity("", user)),
            None => Err(AuthnError::AnonymousDisabled),
        }
    }

    /// Checks a user name and password against this list alone. bcrypt runs on the
    /// bounded pool, and only when the same user, password and stored hash were not
    /// verified within the cache TTL. A name not in the list costs the dummy check.
    pub async fn authenticate(
        &self,
        name: &str,
        password: &Secret,
    ) -> Result<Identity, AuthnError> {
        self.authenticate_at(name, password, SystemTime::now())
            .await
    }

    /// [`Users::authenticate`] as if it were `now` (a robot's expiry is judged at it).
    pub async fn authenticate_at(
        &self,
        name: &str,
        password: &Secret,
        now: SystemTime,
    ) -> Result<Identity, AuthnError> {
        if name.is_empty() {
            return self.anonymous();
        }
        match self.judge(name, password, now).await {
            Verdict::Accepted(identity) => Ok(identity),
            Verdict::Refused(e) => Err(e),
            Verdict::NoMatch => {
                self.check_unknown(password).await?;
                Err(AuthnError::BadCredentials)
            }
        }
    }

    /// What an unknown name costs: the dummy hash checked as a wrong password would be
    /// (`Busy` when the bcrypt pool is full, as for any check).
    pub async fn check_unknown(&self, password: &Secret) -> Result<(), AuthnError> {
        let password = password.clone();
        let hash = self.dummy_hash.clone();
        self.pool
            .run(move || verify_password(&hash, &password))
            .await
            .map_err(|_| AuthnError::Busy)?;
        self.metrics.credential_cache_misses.fetch_add(1, Relaxed);
        Ok(())
    }

    /// A name in the list: its password checked (cached), its robot expiry at `now`.
    async fn judge(&self, name: &str, password: &Secret, now: SystemTime) -> Verdict {
        let Some(user) = self.users.get(name) else {
            return Verdict::NoMatch;
        };
        // Only `""` has no hash, and it takes no password.
        let Some(hash) = user.password_hash.clone() else {
            return Verdict::Refused(AuthnError::BadCredentials);
        };
        let key = self.cache_key(name, password, &hash);
        let ok = if self.verified.cache.contains_key(&key) {
            self.metrics.credential_cache_hits.fetch_add(1, Relaxed);
            true
        } else {
            let password = password.clone();
            let verified = match self
                .pool
                .run(move || verify_password(&hash, &password))
                .await
            {
                Ok(verified) => verified,
                Err(_) => return Verdict::Refused(AuthnError::Busy),
            };
            self.metrics.credential_cache_misses.fetch_add(1, Relaxed);
            verified
        };
        if ok {
            self.verified.cache.insert(key, ());
        }
        match login_outcome(user, ok, now) {
            Ok(()) => Verdict::Accepted(identity(name, user)),
            Err(e) => Verdict::Refused(e),
        }
    }

    /// A fingerprint of the account's stored secret, carried in refresh tokens: a
    /// changed password (or a removed user) makes every earlier refresh token stale.
    pub fn fingerprint(&self, name: &str) -> Option<String> {
        let hash = self.users.get(name)?.password_hash.as_ref()?;
        let d = ring::digest::digest(&ring::digest::SHA256, hash.as_bytes());
        Some(
            d.as_ref()[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// The identity a refresh token stands for, if its account still exists with the
    /// same secret (and, for a robot, has not expired).
    pub fn refresh_identity(&self, name: &str, fingerprint: &str) -> Result<Identity, AuthnError> {
        let user = self.users.get(name).ok_or(AuthnError::StaleRefresh)?;
        if self.fingerprint(name).as_deref() != Some(fingerprint) {
            return Err(AuthnError::StaleRefresh);
        }
        check_expiry(user, SystemTime::now())?;
        Ok(identity(name, user))
    }

    /// A keyed hash of the credential and the stored hash: a changed password, or a
    /// reloaded hash, never hits an old entry, and no password is kept.
    fn cache_key(&self, name: &str, password: &Secret, hash: &str) -> [u8; 32] {
        self.verified.key.tag(&[name, password.expose(), hash])
    }
}

impl Authenticator for Users {
    fn backend(&self) -> Backend {
        // Each user carries its own (users, htpasswd, robots); this is the first.
        Backend::Users
    }

    fn authenticate<'a>(
        &'a self,
        account: &'a str,
        password: &'a Secret,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(self.judge(account, password, SystemTime::now()))
    }

    fn is_known(&self, account: &str, password: &Secret) -> bool {
        Users::is_known(self, account, password)
    }
}

/// A credential of a static user's: the user's labels now, or nobody once removed.
impl super::credentials::Source for Users {
    fn current<'a>(
        &'a self,
        account: &'a str,
        _kept: &'a Labels,
    ) -> BoxFuture<'a, Result<Option<Labels>, AuthnError>> {
        let now = self.users.get(account).map(|u| Labels::clone(&u.labels));
        Box::pin(std::future::ready(Ok(now)))
    }
}

/// What `/auth` answers for an account in the list once bcrypt has said whether the
/// password matches. `regate explain` asks this same function, so the two cannot drift.
pub fn login_outcome(user: &User, password_ok: bool, now: SystemTime) -> Result<(), AuthnError> {
    if !password_ok {
        return Err(AuthnError::BadCredentials);
    }
    check_expiry(user, now)
}

/// bcrypt: whether `password` matches `hash` (a malformed hash matches nothing).
pub fn verify_password(hash: &str, password: &Secret) -> bool {
    bcrypt::verify(password.expose(), hash).unwrap_or(false)
}

impl Robot {
    /// Whether its secret is refused at `now`: from `expires` on. A date means "through
    /// that day", so `expires` is the first instant of the next one, refused; an RFC 3339
    /// time is the first instant refused.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|end| now >= end)
    }
}

fn check_expiry(user: &User, now: SystemTime) -> Result<(), AuthnError> {
    if user.robot.as_ref().is_some_and(|r| r.expired_at(now)) {
        return Err(AuthnError::Expired);
    }
    Ok(())
}

/// Whether `s` looks like a bcrypt hash bcrypt can check (`$2a$`/`$2b$`/`$2x$`/`$2y$`,
/// cost, 53 characters of salt and hash).
pub fn is_bcrypt(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 60
        && s.starts_with("$2")
        && matches!(b[2], b'a' | b'b' | b'x' | b'y')
        && b[3] == b'$'
        && b[4].is_ascii_digit()
        && b[5].is_ascii_digit()
        && b[6] == b'$'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Arc<Users> {
        let mut map = HashMap::new();
        map.insert(
            "alice".to_owned(),
            User {
                password_hash: Some(bcrypt::hash("s3cret", 4).unwrap()),
                labels: Arc::default(),
                robot: None,
                backend: Backend::Users,
            },
        );
        map.insert(
            "htpasswd".to_owned(),
            User {
                // `htpasswd -nbB -C 4 htpasswd pw`
                password_hash: Some(
                    "$2y$04$lbf6dUbrVs3MM5pHTNE.d.ghq3xUYDHrwV/FFHTbrKP4VftsAMmO6".into(),
                ),
                labels: Arc::default(),
                robot: None,
                backend: Backend::Htpasswd,
            },
        );
        Arc::new(Users::new(map, Duration::from_secs(60), Arc::default()))
    }

    #[tokio::test]
    async fn verified_credentials_outlive_a_reload_unless_the_hash_changed() {
        let map = |hash: &str| {
            let user = User {
                password_hash: Some(hash.to_owned()),
                labels: Arc::default(),
                robot: None,
                backend: Backend::Users,
            };
            HashMap::from([("alice".to_owned(), user)])
        };
        let verified = Arc::new(Verified::new(Duration::from_secs(60)));
        let metrics: Arc<Metrics> = Arc::default();
        let load = |hash: &str| {
            Users::new(map(hash), Duration::from_secs(60), metrics.clone())
                .with_verified(verified.clone())
        };
        let pw = Secret::new("s3cret");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        assert!(load(&hash).authenticate("alice", &pw).await.is_ok());
        // The same file loaded again: known, no bcrypt.
        let reloaded = load(&hash);
        assert!(reloaded.is_known("alice", &pw));
        assert!(reloaded.authenticate("alice", &pw).await.is_ok());
        assert_eq!(metrics.credential_cache_hits.load(Relaxed), 1);
        // A new hash (even of the same password) is checked again.
        let rehashed = load(&bcrypt::hash("s3cret", 4).unwrap());
        assert!(!rehashed.is_known("alice", &pw));
        assert!(rehashed.authenticate("alice", &pw).await.is_ok());
        assert_eq!(metrics.credential_cache_misses.load(Relaxed), 2);
    }

    #[tokio::test]
    async fn password_checks() {
        let u = users();
        let ok = u
            .authenticate("alice", &Secret::new("s3cret"))
            .await
            .unwrap();
        assert_eq!(ok.account, "alice");
        // The second time comes from the cache.
        assert!(u
            .authenticate("alice", &Secret::new("s3cret"))
            .await
            .is_ok());
        assert!(matches!(
            u.authenticate("alice", &Secret::new("wrong")).await,
            Err(AuthnError::BadCredentials)
        ));
        // htpasswd writes `$2y$`, which docker_auth users paste as they are.
        assert!(u.authenticate("htpasswd", &Secret::new("pw")).await.is_ok());
        assert!(matches!(
            u.authenticate("nobody", &Secret::new("s3cret")).await,
            Err(AuthnError::BadCredentials)
        ));
    }

    #[tokio::test]
    async fn anonymous_needs_the_empty_user() {
        let u = users();
        assert!(matches!(u.anonymous(), Err(AuthnError::AnonymousDisabled)));
        assert!(matches!(
            u.authenticate("", &Secret::new("")).await,
            Err(AuthnError::AnonymousDisabled)
        ));
    }

    #[test]
    fn bcrypt_shapes() {
        assert!(is_bcrypt(&dummy_hash(5)));
        assert_eq!(bcrypt_cost(&dummy_hash(5)), Some(5));
        assert_eq!(
            bcrypt_cost("$2y$12$anBp7B2A9q1pD2RH5HNv.urpHrlEejsIuxO4vSNsVJ02mj9/kEfzi"),
            Some(12)
        );
        assert!(!is_bcrypt("plaintext"));
        assert!(!is_bcrypt("$1$abc"));
    }
}

#[cfg(test)]
mod dummy_tests {
    use super::*;
    use crate::config::Config;

    /// A hash at `cost` (never checked here: only its cost field matters).
    fn at(cost: u32) -> String {
        format!("$2y${cost:02}$lbf6dUbrVs3MM5pHTNE.d.ghq3xUYDHrwV/FFHTbrKP4VftsAMmO6")
    }

    /// The dummy's cost for a config with these costs in `users:`, the htpasswd file and
    /// `robots:`, loaded as `regate serve` loads it.
    fn dummy_cost_of(users: &[u32], htpasswd: &[u32], robots: &[u32]) -> u32 {
        let dir = tempfile::tempdir().unwrap();
        let file: String = htpasswd
            .iter()
            .enumerate()
            .map(|(i, c)| format!("h{i}:{}\n", at(*c)))
            .collect();
        std::fs::write(dir.path().join("htpasswd"), file).unwrap();
        let mut yaml =
            "upstream: {url: \"http://r:5000\"}\nhtpasswd: htpasswd\nacl: []\nusers:\n  \"\": {}\n"
                .to_owned();
        for (i, c) in users.iter().enumerate() {
            yaml += &format!("  u{i}: {{password: \"{}\"}}\n", at(*c));
        }
        yaml += "robots:\n";
        for (i, c) in robots.iter().enumerate() {
            yaml += &format!("  r{i}: {{secret: \"{}\", acl: []}}\n", at(*c));
        }
        if robots.is_empty() {
            yaml = yaml.replace("robots:\n", "");
        }
        let config = Config::parse(&dir.path().join("regate.yml"), &yaml).unwrap();
        let users = Users::new(config.users, Duration::from_secs(1), Arc::default());
        bcrypt_cost(users.dummy_hash()).expect("the dummy is a bcrypt hash")
    }

    #[test]
    fn an_unknown_user_costs_what_the_configured_users_cost() {
        // htpasswd -B's default, in each place a hash can come from.
        assert_eq!(dummy_cost_of(&[5], &[], &[]), 5);
        assert_eq!(dummy_cost_of(&[], &[5, 5], &[]), 5);
        assert_eq!(dummy_cost_of(&[], &[], &[5]), 5);
        // regate hash-password's default.
        assert_eq!(dummy_cost_of(&[10, 10], &[10], &[10]), 10);
        // Mixed: the most common cost, across all three sources.
        assert_eq!(dummy_cost_of(&[12], &[5, 5, 5], &[10]), 5);
        assert_eq!(dummy_cost_of(&[10, 10], &[5], &[10]), 10);
        assert_eq!(dummy_cost_of(&[5], &[10, 10], &[5, 5]), 5);
        // A tie goes to the higher cost.
        assert_eq!(dummy_cost_of(&[5], &[12], &[]), 12);
        // No account with a secret (anonymous only): bcrypt's usual 10.
        assert_eq!(dummy_cost_of(&[], &[], &[]), 10);
    }
}
