//! Files over HTTP(S): the client, downloads by URL, and small documents such as a Helm
//! repository's `index.yaml`.
//!
//! The client follows redirects (release assets on GitHub redirect to a CDN), takes proxies from
//! `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (reqwest reads them), and trusts the
//! system's CA certificates plus those given with `--ca-cert`.

use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};
use url::Url;

use super::FetchError;
use super::transfer::{MAX_ATTEMPTS, OpenError, Opened, Origin};

/// The `User-Agent` of every request.
pub(crate) const USER_AGENT: &str = concat!("airlock/", env!("CARGO_PKG_VERSION"));
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a response may send nothing before the attempt fails and is retried.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the HTTP client for URLs and chart repositories.
pub(crate) fn client(ca_certs: &[reqwest::Certificate]) -> Result<reqwest::Client, FetchError> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .tls_certs_merge(ca_certs.iter().cloned())
        .build()
        .map_err(|error| FetchError::Client(error_chain(&error)))
}

/// A file at a URL.
pub(crate) struct UrlOrigin<'a> {
    pub client: &'a reqwest::Client,
    pub url: &'a Url,
}

#[async_trait]
impl Origin for UrlOrigin<'_> {
    type Error = FetchError;

    async fn open(&self, offset: u64) -> Result<Opened, OpenError<FetchError>> {
        let mut request = self.client.get(self.url.clone());
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        let response = request
            .send()
            .await
            .map_err(|error| classify(self.url, &error))?;
        let status = response.status();
        let start = match status {
            StatusCode::OK => 0,
            StatusCode::PARTIAL_CONTENT => range_start(&response).unwrap_or(u64::MAX),
            // The partial file is as long as the content or longer: start over.
            StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => {
                tracing::debug!(url = %self.url, offset, "the range was rejected; starting over");
                return self.open(0).await;
            }
            status => return Err(status_error(self.url, status)),
        };
        if start != 0 && start != offset {
            return Err(OpenError::Permanent(FetchError::Http {
                url: self.url.to_string(),
                reason: format!(
                    "the server returned bytes {start}- for a request of bytes {offset}-"
                ),
            }));
        }
        let total = match status {
            StatusCode::PARTIAL_CONTENT => range_total(&response),
            _ => response.content_length(),
        };
        let stream = response
            .bytes_stream()
            .map_err(std::io::Error::other)
            .boxed();
        Ok(Opened {
            stream,
            start,
            total,
        })
    }
}

/// Fetches a document of at most `limit` bytes, retrying transient failures.
pub(crate) async fn get_document(
    client: &reqwest::Client,
    url: &Url,
    limit: u64,
) -> Result<Vec<u8>, FetchError> {
    let mut attempt = 1;
    loop {
        match get_document_once(client, url, limit).await {
            Ok(body) => return Ok(body),
            Err(OpenError::Permanent(error)) => return Err(error),
            Err(OpenError::Transient(reason)) if attempt < MAX_ATTEMPTS => {
                tracing::warn!(%url, attempt, %reason, "request failed; retrying");
                tokio::time::sleep(Duration::from_millis(250 << (attempt - 1))).await;
                attempt += 1;
            }
            Err(OpenError::Transient(reason)) => {
                return Err(FetchError::Unreachable {
                    url: url.to_string(),
                    attempts: attempt,
                    reason,
                });
            }
        }
    }
}

async fn get_document_once(
    client: &reqwest::Client,
    url: &Url,
    limit: u64,
) -> Result<Vec<u8>, OpenError<FetchError>> {
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|error| classify(url, &error))?;
    if response.status() != StatusCode::OK {
        return Err(status_error(url, response.status()));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| classify(url, &error))?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(OpenError::Permanent(FetchError::Http {
                url: url.to_string(),
                reason: format!("the document is larger than {limit} bytes"),
            }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Sorts a failed request into worth retrying or not.
pub(crate) fn classify(url: &Url, error: &reqwest::Error) -> OpenError<FetchError> {
    let reason = error_chain(error);
    if error.is_builder() || error.is_redirect() {
        OpenError::Permanent(FetchError::Http {
            url: url.to_string(),
            reason,
        })
    } else {
        OpenError::Transient(reason)
    }
}

fn status_error(url: &Url, status: StatusCode) -> OpenError<FetchError> {
    let transient = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    if transient {
        OpenError::Transient(format!("{url} returned HTTP {status}"))
    } else {
        OpenError::Permanent(FetchError::Http {
            url: url.to_string(),
            reason: format!("the server returned HTTP {status}"),
        })
    }
}

/// Returns the first byte of a `Content-Range: bytes START-END/TOTAL` header.
fn range_start(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let range = value.strip_prefix("bytes ")?;
    range.split(['-', '/']).next()?.trim().parse().ok()
}

/// Returns the TOTAL of a `Content-Range: bytes START-END/TOTAL` header, unless it is `*`.
fn range_total(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    value.rsplit_once('/')?.1.trim().parse().ok()
}

/// Joins an error and its sources into one line, because reqwest's own message leaves out the
/// cause (a refused connection, an unknown certificate issuer).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Returns the file name a URL's last path segment gives, percent-decoded.
pub(crate) fn file_name(url: &Url) -> Option<String> {
    let segment = url.path_segments()?.next_back()?;
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?
        .into_owned();
    let valid = !decoded.is_empty()
        && decoded != "."
        && decoded != ".."
        && !decoded.contains('/')
        && !decoded.chars().any(char::is_control);
    valid.then_some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_decodes_last_segment() {
        let url = Url::parse(
            "https://github.com/k0sproject/k0s/releases/download/v1.36.3%2Bk0s.0/k0s-v1.36.3%2Bk0s.0-amd64",
        )
        .unwrap();
        assert_eq!(file_name(&url).as_deref(), Some("k0s-v1.36.3+k0s.0-amd64"));
        assert_eq!(
            file_name(&Url::parse("https://example.invalid/").unwrap()),
            None
        );
    }
}
