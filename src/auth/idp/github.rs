//! GitHub (`github_auth`), as GitHub documents its OAuth apps and REST API
//! (docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps): the web
//! flow with `state` and PKCE, scope `read:org`; the account is the user's `login`; with
//! `organization`, only its members (`GET /orgs/ORG/members/USER`: 204), and their team
//! slugs in it (and the slugs of those teams' parents) as the label `teams`, read at
//! sign-in and again at every check (docker_auth reads them once).

use super::http::{next_link, Auth};
use super::oidc::tokens_of;
use super::{Client, Flow, IdpError, Kind, Record, Settings};
use crate::acl::Labels;
use crate::percent::form_encode;

const SCOPE: &str = "read:org";
const ACCEPT: &str = "application/vnd.github+json";
/// At most this many pages of 100 teams.
const PAGES: usize = 20;

pub struct Github {
    organization: Option<String>,
    web: String,
    api: String,
}

#[derive(serde::Deserialize)]
struct User {
    login: String,
    id: serde_json::Value,
}

#[derive(serde::Deserialize)]
struct Team {
    slug: String,
    #[serde(default)]
    organization: Option<Org>,
    #[serde(default)]
    parent: Option<Parent>,
}

#[derive(serde::Deserialize)]
struct Org {
    login: String,
}

#[derive(serde::Deserialize)]
struct Parent {
    slug: String,
}

impl Github {
    pub fn new(settings: &Settings) -> Github {
        let Kind::Github {
            organization,
            web,
            api,
        } = &settings.kind
        else {
            unreachable!("a github_auth section")
        };
        Github {
            organization: organization.clone(),
            web: web.clone(),
            api: api.clone(),
        }
    }

    pub fn authorize_url(&self, client: &Client, flow: &Flow) -> String {
        let challenge = flow.challenge();
        let mut params = vec![
            ("client_id", client.id.as_str()),
            ("scope", SCOPE),
            ("state", &flow.state),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("allow_signup", "false"),
        ];
        // Without one, GitHub sends the browser to the app's registered callback.
        if let Some(uri) = &flow.redirect_uri {
            params.push(("redirect_uri", uri));
        }
        format!(
            "{}/login/oauth/authorize?{}",
            self.web,
            crate::percent::form(&params)
        )
    }

    pub async fn finish(
        &self,
        client: &Client,
        code: &str,
        flow: &Flow,
    ) -> Result<Record, IdpError> {
        let mut form = vec![
            ("client_id", client.id.as_str()),
            ("client_secret", client.secret.expose()),
            ("code", code),
            ("code_verifier", &flow.verifier),
        ];
        if let Some(uri) = &flow.redirect_uri {
            form.push(("redirect_uri", uri));
        }
        let url = format!("{}/login/oauth/access_token", self.web);
        let answer = client.http.post_form(&url, Auth::None, &form).await?;
        let tokens = tokens_of(&answer, "GitHub token endpoint")?;
        let (login, id, labels) = self.check(client, &tokens.access_token).await?;
        Ok(Record::new(login, id, tokens, labels))
    }

    pub async fn revalidate(&self, client: &Client, record: &Record) -> Result<Record, IdpError> {
        let (login, id, labels) = self.check(client, &record.access_token).await?;
        if id != record.subject || login != record.account {
            return Err(IdpError::Refused(format!(
                "GitHub's token now belongs to {login}, not to {}",
                record.account
            )));
        }
        Ok(Record {
            labels,
            ..record.clone()
        })
    }

    /// Who the token belongs to, whether the organization lets them in, and their teams.
    async fn check(
        &self,
        client: &Client,
        token: &str,
    ) -> Result<(String, String, Labels), IdpError> {
        let answer = client
            .http
            .get(&format!("{}/user", self.api), Auth::Bearer(token), ACCEPT)
            .await?;
        match answer.status.as_u16() {
            200 => {}
            401 => {
                return Err(IdpError::Refused(
                    "GitHub no longer accepts the token regate holds (revoked, or the app's access was removed)".to_owned(),
                ))
            }
            status => return Err(IdpError::Unreachable(format!("GitHub's /user answered HTTP {status}"))),
        }
        let user: User = answer.json().map_err(IdpError::Unreachable)?;
        let id = match &user.id {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let Some(org) = &self.organization else {
            return Ok((user.login, id, Labels::new()));
        };
        let url = format!(
            "{}/orgs/{}/members/{}",
            self.api,
            form_encode(org),
            form_encode(&user.login)
        );
        let answer = client.http.get(&url, Auth::Bearer(token), ACCEPT).await?;
        match answer.status.as_u16() {
            204 => {}
            // 302: the caller is not a member, so GitHub offers only the public list.
            302 | 404 => {
                return Err(IdpError::NotAllowed(format!(
                    "{} is not a member of the GitHub organization {org}",
                    user.login
                )))
            }
            401 => return Err(IdpError::Refused("GitHub no longer accepts the token regate holds".to_owned())),
            403 => {
                return Err(IdpError::NotAllowed(format!(
                    "GitHub does not let regate see the members of {org}: the organization may have to approve regate's OAuth app"
                )))
            }
            status => {
                return Err(IdpError::Unreachable(format!(
                    "GitHub's organization membership check answered HTTP {status}"
                )))
            }
        }
        let teams = self.teams(client, token, org).await?;
        let mut labels = Labels::new();
        if !teams.is_empty() {
            labels.insert("teams".to_owned(), teams);
        }
        Ok((user.login, id, labels))
    }

    /// The slugs of the user's teams in `org` and of their parents, every page of them.
    async fn teams(
        &self,
        client: &Client,
        token: &str,
        org: &str,
    ) -> Result<Vec<String>, IdpError> {
        let mut url = format!("{}/user/teams?per_page=100", self.api);
        let mut slugs = Vec::new();
        for _ in 0..PAGES {
            let answer = client.http.get(&url, Auth::Bearer(token), ACCEPT).await?;
            match answer.status.as_u16() {
                200 => {}
                401 => {
                    return Err(IdpError::Refused(
                        "GitHub no longer accepts the token regate holds".to_owned(),
                    ))
                }
                status => {
                    return Err(IdpError::Unreachable(format!(
                        "GitHub's /user/teams answered HTTP {status}"
                    )))
                }
            }
            let page: Vec<Team> = answer.json().map_err(IdpError::Unreachable)?;
            for team in page {
                let ours = team
                    .organization
                    .as_ref()
                    .is_some_and(|o| o.login.eq_ignore_ascii_case(org));
                if ours {
                    slugs.push(team.slug);
                    slugs.extend(team.parent.map(|p| p.slug));
                }
            }
            match next_link(&answer.headers) {
                Some(next) => url = next,
                None => break,
            }
        }
        slugs.sort();
        slugs.dedup();
        Ok(slugs)
    }
}
