//! GitLab (`gitlab_auth`), as GitLab documents its OAuth 2.0 provider
//! (docs.gitlab.com/api/oauth2/) and API: the web flow with `state` and PKCE, scopes
//! `read_user` (the account: `GET /api/v4/user`'s `username`) and `openid` (the groups:
//! UserInfo's `groups`, the full paths of the user's groups, also those reached through
//! a parent group). `organization`, unused by docker_auth, restricts sign-in here to
//! members of that group (or of a group below it). Access tokens expire (2 h on
//! gitlab.com): a check that finds one expired uses the refresh token, which GitLab
//! replaces at each use.
//!
//! Why UserInfo and not `GET /api/v4/groups`: that needs the `read_api` scope, which
//! lets the token read every project the user can; `openid` reads who they are.

use super::http::Auth;
use super::oidc::tokens_of;
use super::{Client, Flow, IdpError, Kind, Record, Settings};
use crate::acl::Labels;

const SCOPE: &str = "read_user openid";

pub struct Gitlab {
    group: Option<String>,
    web: String,
    api: String,
}

#[derive(serde::Deserialize)]
struct User {
    username: String,
    id: serde_json::Value,
}

#[derive(serde::Deserialize)]
struct UserInfo {
    #[serde(default)]
    groups: Vec<String>,
}

impl Gitlab {
    pub fn new(settings: &Settings) -> Gitlab {
        let Kind::Gitlab { group, web, api } = &settings.kind else {
            unreachable!("a gitlab_auth section")
        };
        Gitlab {
            group: group.clone(),
            web: web.clone(),
            api: api.clone(),
        }
    }

    pub fn authorize_url(&self, client: &Client, flow: &Flow) -> String {
        let challenge = flow.challenge();
        let mut params = vec![
            ("client_id", client.id.as_str()),
            ("response_type", "code"),
            ("scope", SCOPE),
            ("state", &flow.state),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ];
        if let Some(uri) = &flow.redirect_uri {
            params.push(("redirect_uri", uri));
        }
        format!(
            "{}/oauth/authorize?{}",
            self.web,
            crate::percent::form(&params)
        )
    }

    async fn token_request(
        &self,
        client: &Client,
        form: &[(&str, &str)],
    ) -> Result<super::tokendb::Tokens, IdpError> {
        let mut form = form.to_vec();
        form.push(("client_id", &client.id));
        form.push(("client_secret", client.secret.expose()));
        let url = format!("{}/oauth/token", self.web);
        let answer = client.http.post_form(&url, Auth::None, &form).await?;
        tokens_of(&answer, "GitLab token endpoint")
    }

    pub async fn finish(
        &self,
        client: &Client,
        code: &str,
        flow: &Flow,
    ) -> Result<Record, IdpError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", flow.verifier.as_str()),
        ];
        if let Some(uri) = &flow.redirect_uri {
            form.push(("redirect_uri", uri));
        }
        let tokens = self.token_request(client, &form).await?;
        let (username, id, labels) = self.check(client, &tokens.access_token).await?;
        Ok(Record::new(username, id, tokens, labels))
    }

    pub async fn revalidate(&self, client: &Client, record: &Record) -> Result<Record, IdpError> {
        let mut record = record.clone();
        let checked = match self.check(client, &record.access_token).await {
            Err(IdpError::Refused(why)) => {
                // Expired (or revoked): a refresh tells which.
                let Some(refresh) = record.refresh_token.clone() else {
                    return Err(IdpError::Refused(why));
                };
                let form = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                ];
                let tokens = self.token_request(client, &form).await?;
                record.access_token = tokens.access_token;
                record.token_type = tokens.token_type;
                record.refresh_token = tokens.refresh_token.or(Some(refresh));
                record.expires_in = tokens.expires_in;
                self.check(client, &record.access_token).await?
            }
            other => other?,
        };
        let (username, id, labels) = checked;
        if id != record.subject || username != record.account {
            return Err(IdpError::Refused(format!(
                "GitLab's token now belongs to {username}, not to {}",
                record.account
            )));
        }
        record.labels = labels;
        Ok(record)
    }

    /// Who the token belongs to, their groups, and whether `organization` lets them in.
    async fn check(
        &self,
        client: &Client,
        token: &str,
    ) -> Result<(String, String, Labels), IdpError> {
        let status_error = |what: &str, status: u16| match status {
            401 => IdpError::Refused(format!(
                "GitLab no longer accepts the access token ({what}: HTTP 401)"
            )),
            403 => IdpError::Misconfigured(format!(
                "GitLab refused {what} (HTTP 403): does the application allow the scopes `{SCOPE}`?"
            )),
            _ => IdpError::Unreachable(format!("GitLab's {what} answered HTTP {status}")),
        };
        let answer = client
            .http
            .get(
                &format!("{}/user", self.api),
                Auth::Bearer(token),
                "application/json",
            )
            .await?;
        if answer.status.as_u16() != 200 {
            return Err(status_error("/user", answer.status.as_u16()));
        }
        let user: User = answer.json().map_err(IdpError::Unreachable)?;
        let answer = client
            .http
            .get(
                &format!("{}/oauth/userinfo", self.web),
                Auth::Bearer(token),
                "application/json",
            )
            .await?;
        if answer.status.as_u16() != 200 {
            return Err(status_error("/oauth/userinfo", answer.status.as_u16()));
        }
        let info: UserInfo = answer.json().map_err(IdpError::Unreachable)?;
        let id = match &user.id {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if let Some(group) = &self.group {
            let inside = format!("{group}/");
            let member = info.groups.iter().any(|g| {
                g.eq_ignore_ascii_case(group)
                    || g.to_ascii_lowercase()
                        .starts_with(&inside.to_ascii_lowercase())
            });
            if !member {
                return Err(IdpError::NotAllowed(format!(
                    "{} is not a member of the GitLab group {group}",
                    user.username
                )));
            }
        }
        let mut groups = info.groups;
        groups.sort();
        groups.dedup();
        let mut labels = Labels::new();
        if !groups.is_empty() {
            labels.insert("groups".to_owned(), groups);
        }
        Ok((user.username, id, labels))
    }
}
