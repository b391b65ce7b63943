//! OAuth2: the provider table, the HTTP client for token requests, and the flows.

pub mod client_credentials;
pub mod device;
pub mod flow;
pub mod http;
pub mod jwt;
pub mod password;
pub mod private_key;
pub mod provider;
pub mod registration;
pub mod service_account;
mod token_error;

pub use client_credentials::client_credentials;
pub use device::{device_finish, device_start, DeviceAuthorization};
pub use flow::{
    authorize_url, exchange_code, refresh, AuthorizeRequest, ClientRegistration, RequestDeadline,
    TokenSet,
};
pub use http::{HttpError, HttpRequest, HttpResponse, LazyHttp, TokenHttpClient, UreqClient};
pub use password::password;
pub use provider::{EndpointParams, Endpoints, Provider};
pub use service_account::service_account;
