//! One sign-in in progress: the `state` that ties the provider's answer to it, the `nonce`
//! the id_token must carry back, the PKCE verifier only regate knows, and the browser it
//! began in. Kept in the state store (so any replica sharing it can finish the sign-in)
//! under a hash of the state, for ten minutes, and taken at most once: a replayed answer
//! finds it gone, and is told so.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{digest, now, random};
use crate::auth::identity::Backend;
use crate::state::{Store, StoreError};

/// How long a sign-in may take, from the click to the provider's answer.
pub const LIFETIME: Duration = Duration::from_secs(600);

#[derive(Clone, Serialize, Deserialize)]
pub struct Flow {
    /// The section it signs in with (`oidc_auth`, ...).
    pub section: String,
    /// Sent to the provider; the store keeps only its hash (as the key).
    #[serde(skip)]
    pub state: String,
    /// A hash of the browser's `regate_idp` cookie: the answer must come back to the same
    /// browser (no sign-in CSRF: nobody can make a victim's browser finish their sign-in).
    pub browser: String,
    pub nonce: String,
    /// PKCE (RFC 7636): the code is useless without it, and it never leaves regate but to
    /// the token endpoint.
    pub verifier: String,
    /// The `redirect_uri` sent, which the code exchange must repeat.
    pub redirect_uri: Option<String>,
    pub created: u64,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("section", &self.section)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// What a state found in the store.
#[derive(Debug)]
pub enum Taken {
    Found(Flow),
    /// It was taken already: the provider's answer came twice.
    Used,
    /// Never issued here, or older than ten minutes.
    Unknown,
}

fn key(state: &str) -> String {
    format!("idp:flow:{}", digest(state))
}

fn used_key(state: &str) -> String {
    format!("idp:used:{}", digest(state))
}

impl Flow {
    /// A new sign-in for the browser holding `cookie`.
    pub fn new(section: Backend, cookie: &str, redirect_uri: Option<String>) -> Flow {
        Flow {
            section: section.section().to_owned(),
            state: random(),
            browser: digest(cookie),
            nonce: random(),
            verifier: random(),
            redirect_uri,
            created: now(),
        }
    }

    /// The PKCE `code_challenge` (S256) for the verifier.
    pub fn challenge(&self) -> String {
        digest(&self.verifier)
    }

    /// Whether the browser holding `cookie` is the one that began the sign-in.
    pub fn is_from(&self, cookie: Option<&str>) -> bool {
        cookie.is_some_and(|c| {
            let (a, b) = (digest(c), &self.browser);
            a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
        })
    }

    pub async fn save(&self, store: &Arc<dyn Store>) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        store.put(&key(&self.state), bytes, Some(LIFETIME)).await
    }

    /// Takes the sign-in `state` names, once.
    pub async fn take(store: &Arc<dyn Store>, state: &str) -> Result<Taken, StoreError> {
        let Some(bytes) = store.get(&key(state)).await? else {
            return Ok(match store.get(&used_key(state)).await? {
                Some(_) => Taken::Used,
                None => Taken::Unknown,
            });
        };
        // The counter is the one atomic step the store has: of two answers racing, one
        // counts 1 and finishes the sign-in, the other is a replay.
        if store.incr(&used_key(state), LIFETIME).await? > 1 {
            return Ok(Taken::Used);
        }
        store.delete(&key(state)).await?;
        match serde_json::from_slice::<Flow>(&bytes) {
            Ok(mut flow) => {
                flow.state = state.to_owned();
                Ok(Taken::Found(flow))
            }
            Err(_) => Ok(Taken::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Local;

    #[tokio::test]
    async fn a_flow_is_taken_once_and_knows_its_browser() {
        let store: Arc<dyn Store> = Arc::new(Local::memory());
        let flow = Flow::new(Backend::OidcAuth, "cookie-a", None);
        assert_ne!(flow.state, flow.nonce);
        assert_eq!(flow.challenge().len(), 43);
        flow.save(&store).await.unwrap();
        let Taken::Found(found) = Flow::take(&store, &flow.state).await.unwrap() else {
            panic!("the flow");
        };
        assert_eq!(found.nonce, flow.nonce);
        assert!(found.is_from(Some("cookie-a")));
        assert!(!found.is_from(Some("cookie-b")));
        assert!(!found.is_from(None));
        assert!(matches!(
            Flow::take(&store, &flow.state).await.unwrap(),
            Taken::Used
        ));
        assert!(matches!(
            Flow::take(&store, "never-issued").await.unwrap(),
            Taken::Unknown
        ));
        // The store holds no state or verifier in the clear.
        for k in store.keys("idp:").await.unwrap() {
            assert!(!k.contains(&flow.state));
        }
    }

    #[test]
    fn the_challenge_is_rfc_7636_s256() {
        // RFC 7636 appendix B.
        let flow = Flow {
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            ..Flow::new(Backend::OidcAuth, "c", None)
        };
        assert_eq!(
            flow.challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
