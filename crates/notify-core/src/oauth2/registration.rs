//! One OAuth2 client registration: which provider endpoints, which client, how the client
//! authenticates. Every flow module builds its token requests from it; the error mapping reads
//! its method and endpoints.

use super::provider::{self, ClientAuth, EndpointParams, Endpoints};
use crate::config::smtp::{AuthMethod, OAuth2Flow, SmtpSecrets, SmtpTarget};
use crate::error::{Error, Result};
use crate::redact::Redactor;
use crate::secret::Secret;
use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, Scope, TokenUrl};

/// One OAuth2 client registration: provider endpoints plus client credentials.
#[derive(Debug, Clone)]
pub struct ClientRegistration {
    /// The auth method (selects the provider).
    pub method: AuthMethod,
    /// Client (application) ID.
    pub client_id: String,
    /// Client secret; `None` for public clients (PKCE only).
    pub client_secret: Option<Secret>,
    /// Resolved endpoints.
    pub endpoints: Endpoints,
    /// How the client authenticates at the token endpoint.
    pub client_auth: ClientAuth,
    /// Signing key of `private_key_jwt` and of service-account assertions.
    pub private_key: Option<Secret>,
    /// `kid` of the signed assertions.
    pub key_id: Option<String>,
    /// The certificate thumbprint of client assertions (Entra certificate credentials),
    /// sent as `x5t` (SHA-1) or `x5t#S256` (SHA-256).
    pub thumbprint: Option<super::jwt::Thumbprint>,
    /// The service account (`iss` of service-account assertions).
    pub service_account: Option<String>,
}

impl ClientRegistration {
    /// Build from explicit parameters (the API's token exchange, before a target exists).
    pub fn new(
        method: AuthMethod,
        client_id: &str,
        client_secret: Option<Secret>,
        params: &EndpointParams<'_>,
    ) -> Result<Self> {
        if client_id.trim().is_empty() || client_id.chars().any(char::is_control) {
            return Err(Error::param(
                "client-id",
                "missing or contains control characters",
            ));
        }
        let endpoints = provider::resolve(method, params)?;
        Ok(ClientRegistration {
            method,
            client_id: client_id.to_string(),
            client_secret: client_secret.filter(|s| !s.is_empty()),
            client_auth: endpoints.provider.client_auth,
            endpoints,
            private_key: None,
            key_id: None,
            thumbprint: None,
            service_account: None,
        })
    }

    /// Build from a configured target; its endpoints may be on the provider's hosts and on
    /// `extra_hosts` ([`crate::Settings::provider_hosts`]).
    pub fn of_target(
        target: &SmtpTarget,
        secrets: &SmtpSecrets,
        extra_hosts: &[String],
    ) -> Result<Self> {
        // a service account's client ID is optional (only domain-wide delegation names it)
        let client_id = target
            .oauth2_client_id
            .as_deref()
            .or(target.oauth2_service_account.as_deref())
            .unwrap_or_default();
        let mut reg = Self::new(
            target.auth_method,
            client_id,
            secrets.oauth2_client_secret.clone(),
            &EndpointParams::of_target(target).allowing(extra_hosts),
        )?;
        reg.apply_client_auth(target, secrets);
        Ok(reg)
    }

    /// Take the target's client authentication (method, private key, key ID, thumbprint) and
    /// service account: every token request of the target authenticates as configured.
    pub fn apply_client_auth(&mut self, target: &SmtpTarget, secrets: &SmtpSecrets) {
        if let Some(a) = target.oauth2_client_auth {
            self.client_auth = a.into();
        }
        self.private_key = secrets.oauth2_private_key.clone();
        self.key_id = target.oauth2_key_id.clone();
        self.thumbprint = target
            .oauth2_certificate_thumbprint
            .as_deref()
            .and_then(super::jwt::thumbprint_of_hex);
        self.service_account = target.oauth2_service_account.clone();
    }

    /// The flow this registration is for.
    pub fn flow(&self) -> OAuth2Flow {
        self.endpoints.flow
    }

    /// The scopes to request, as the oauth2 crate takes them.
    pub(crate) fn scopes(&self) -> Vec<Scope> {
        self.endpoints
            .scopes
            .iter()
            .cloned()
            .map(Scope::new)
            .collect()
    }

    /// A redactor for everything the token endpoint may echo of this registration's secrets.
    pub(crate) fn redactor(&self) -> Redactor {
        Redactor::new()
            .secret(self.client_secret.as_ref())
            .secret(self.private_key.as_ref())
            .basic_auth(&self.client_id, self.client_secret.as_ref())
    }

    /// A fresh client assertion if the client authenticates with `private_key_jwt` (one per
    /// request: servers refuse a replayed `jti`).
    pub(crate) fn client_assertion(&self) -> Result<Option<Secret>> {
        if self.client_auth != ClientAuth::PrivateKeyJwt {
            return Ok(None);
        }
        let key = self.private_key.as_ref().ok_or_else(|| {
            Error::param(
                "oauth2-private-key",
                "oauth2-client-auth private-key-jwt needs the private key",
            )
        })?;
        super::jwt::client_assertion(
            &self.client_id,
            self.endpoints.token_url.as_str(),
            key,
            self.key_id.as_deref(),
            self.thumbprint.as_ref(),
        )
        .map(Some)
    }

    pub(crate) fn token_client(
        &self,
    ) -> BasicClient<
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointSet,
    > {
        let mut c = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_token_uri(TokenUrl::from_url(self.endpoints.token_url.clone()))
            .set_auth_type(match self.client_auth {
                ClientAuth::Basic => AuthType::BasicAuth,
                ClientAuth::Post | ClientAuth::PrivateKeyJwt => AuthType::RequestBody,
            });
        if let Some(s) = self
            .client_secret
            .as_ref()
            .filter(|_| self.client_auth != ClientAuth::PrivateKeyJwt)
        {
            c = c.set_client_secret(ClientSecret::new(s.expose().to_string()));
        }
        c
    }
}
