//! The one HTTP client kordon builds itself (the API server has kube's): hyper over
//! rustls with the platform's roots, for the webhook notifications' POSTs and the metric
//! gates' GETs. Each request has a deadline and each body a size limit, as the far end
//! is not ours.
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A client for http:// and https:// URLs (HTTP/1.1), cheap to clone.
pub type Client =
    hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("the HTTP client cannot use this machine's TLS roots: {0}")]
    Tls(String),
    #[error("{0}")]
    Request(String),
    #[error("no answer in {0:?}")]
    Timeout(Duration),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// The largest body a GET reads: a Prometheus vector or a list of alerts, not a dump.
const BODY_LIMIT: usize = 4 << 20;

/// Builds the client (within a Tokio runtime).
pub fn client() -> Result<Client, HttpError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_platform_verifier(rustls::crypto::ring::default_provider())
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https))
}

/// The `User-Agent` kordon sends.
pub const USER_AGENT: &str = concat!("kordon/", env!("CARGO_PKG_VERSION"));

/// GETs `uri` within `timeout`: its status and body (at most [`BODY_LIMIT`] bytes).
pub async fn get(
    client: &Client,
    uri: Uri,
    timeout: Duration,
) -> Result<(hyper::StatusCode, Bytes), HttpError> {
    let request = hyper::Request::get(uri)
        .header(hyper::header::USER_AGENT, USER_AGENT)
        .header(hyper::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| HttpError::Request(e.to_string()))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| HttpError::Request(error_chain(&e)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| match e.downcast::<http_body_util::LengthLimitError>() {
                Ok(_) => HttpError::TooLarge(BODY_LIMIT),
                Err(e) => HttpError::Request(e.to_string()),
            })?;
        Ok((status, body.to_bytes()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HttpError::Timeout(timeout))?
}

/// An error with its causes ("client error (Connect): tcp connect error: Connection
/// refused"): hyper's own message alone says little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
