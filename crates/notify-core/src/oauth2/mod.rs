//! OAuth2: the provider table, the HTTP client for token requests, and the flows.

pub mod flow;
pub mod http;
pub mod provider;
mod token_error;

pub use flow::{
    authorize_url, exchange_code, refresh, AuthorizeRequest, ClientRegistration, RequestDeadline,
    TokenSet,
};
pub use http::{HttpError, HttpRequest, HttpResponse, TokenHttpClient, UreqClient};
pub use provider::{EndpointParams, Endpoints, Provider};
