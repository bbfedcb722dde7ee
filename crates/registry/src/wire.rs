//! The HTTP layer under the registry protocol: one reqwest client per side with connect and
//! read (stall) timeouts, a redirect policy, bodies read within a limit, and error answers
//! turned into classified errors without echoing what other hosts said.

use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use reqwest::redirect;

use crate::error::{CopyError, ErrorClass, class_of_status};
use crate::{Redirects, Timeouts, TlsOptions};

/// Bytes of an error answer read to find the registry's error code.
const ERROR_BODY_BYTES: u64 = 8 << 10;
/// Characters of a registry's error message kept in ours.
const ERROR_MESSAGE_CHARS: usize = 300;

/// The HTTP client for these settings. Building one loads the system's root certificates, so
/// each distinct setting is built once per process and shared (a clone shares its connection
/// pool): the controller resolves, verifies and copies many times with the same options.
pub(crate) fn client(
    tls: &TlsOptions,
    timeouts: &Timeouts,
    redirects: &Redirects,
) -> Result<reqwest::Client, CopyError> {
    type Key = (Vec<Vec<u8>>, Timeouts, Redirects);
    static BUILT: Mutex<Vec<(Key, reqwest::Client)>> = Mutex::new(Vec::new());
    let key: Key = (tls.ca_pems.clone(), timeouts.clone(), redirects.clone());
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, client)) = built.iter().find(|(k, _)| *k == key) {
        return Ok(client.clone());
    }
    let client = build_client(tls, timeouts, redirects)?;
    // A process sees a handful of settings; the bound only guards against a caller that varies them.
    if built.len() >= 8 {
        built.remove(0);
    }
    built.push((key, client.clone()));
    Ok(client)
}

fn build_client(
    tls: &TlsOptions,
    timeouts: &Timeouts,
    redirects: &Redirects,
) -> Result<reqwest::Client, CopyError> {
    let bad_ca = |e: reqwest::Error| {
        CopyError::new(
            ErrorClass::Invalid,
            "read the CA certificates",
            describe(&e),
        )
    };
    let mut certificates = Vec::new();
    for pem in &tls.ca_pems {
        certificates.extend(reqwest::Certificate::from_pem_bundle(pem).map_err(bad_ca)?);
    }
    let policy = redirects.clone();
    reqwest::Client::builder()
        .user_agent(concat!("privateer/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeouts.connect)
        .read_timeout(timeouts.read)
        .tls_certs_merge(certificates)
        .redirect(redirect::Policy::custom(
            move |attempt| match redirect_refusal(&policy, attempt.url(), attempt.previous()) {
                Some(refusal) => attempt.error(refusal),
                None => attempt.follow(),
            },
        ))
        .build()
        .map_err(|e| CopyError::new(ErrorClass::Invalid, "build the HTTP client", describe(&e)))
}

/// Why a redirect to `next` is not followed, if it is not.
fn redirect_refusal(
    policy: &Redirects,
    next: &reqwest::Url,
    previous: &[reqwest::Url],
) -> Option<String> {
    if !matches!(next.scheme(), "http" | "https") {
        return Some(format!(
            "redirect to scheme {:?} refused (only http and https)",
            next.scheme()
        ));
    }
    if previous.contains(next) {
        return Some(format!("redirect loop at {}", without_query(next)));
    }
    if previous.len() > policy.max_hops {
        return Some(format!(
            "more than {} redirects (limit redirects.maxHops)",
            policy.max_hops
        ));
    }
    if !policy.allow_private && next.host_str().is_some_and(is_private_host) {
        return Some(format!(
            "redirect to the private address {} refused (redirects.allowPrivate is false)",
            next.host_str().unwrap_or_default()
        ));
    }
    None
}

/// Loopback, private, link-local or unspecified: literal IPs and `localhost`.
fn is_private_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
        }
        Ok(IpAddr::V6(ip)) => {
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private_host(&v4.to_string()))
        }
        Err(_) => false,
    }
}

/// A URL for messages: no query (upload URLs and signed CDN URLs carry secrets there).
pub(crate) fn without_query(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// Read a body of at most `limit` bytes; a larger one is refused before or while it arrives.
/// `limit_name` is the configuration key, for the message.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: u64,
    action: &str,
    limit_name: &str,
) -> Result<Bytes, CopyError> {
    let host = host_port(response.url());
    let too_big = |size: String| {
        CopyError::new(
            ErrorClass::Invalid,
            action,
            format!("the answer is {size} bytes, over the limit {limit_name} = {limit}"),
        )
    };
    if let Some(length) = response.content_length()
        && length > limit
    {
        return Err(too_big(length.to_string()));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| request_error(action, &e, &host))?
    {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_big(format!("more than {limit}")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A failed request (no answer, or a body broken off) to `host`, classified and described
/// by its cause.
pub(crate) fn request_error(action: &str, error: &reqwest::Error, host: &str) -> CopyError {
    let host = error.url().map_or_else(|| host.to_owned(), host_port);
    if error.is_redirect() {
        return CopyError::new(ErrorClass::Invalid, action, describe(error));
    }
    if error.is_timeout() {
        return CopyError::new(
            ErrorClass::Network,
            action,
            format!(
                "{host} stalled: no answer within the read timeout ({})",
                describe(error)
            ),
        );
    }
    if error.is_builder() {
        return CopyError::new(ErrorClass::Invalid, action, describe(error));
    }
    CopyError::new(ErrorClass::Network, action, describe(error))
}

/// An answer with an error status, classified by status and the registry's error code. The
/// body is read only from `registry_host`: a host a redirect led to is not quoted.
pub(crate) async fn status_error(
    response: reqwest::Response,
    registry_host: &str,
    action: &str,
) -> CopyError {
    let status = response.status();
    let url = response.url().clone();
    let from_registry = host_port(&url) == registry_host;
    // Only the registry itself may pause the registry (not a CDN it redirected to).
    let retry_after = (from_registry && matches!(status.as_u16(), 429 | 503))
        .then(|| crate::pause::retry_after(response.headers()))
        .flatten();
    if let Some(wait) = retry_after {
        crate::pause::pause(registry_host, wait);
    }
    let mut class = class_of_status(status.as_u16());
    let mut message = format!("{status}");
    if !from_registry {
        message = format!("{status} from {} (a redirect)", without_query(&url));
    } else if let Ok(body) = read_limited(response, ERROR_BODY_BYTES, action, "errorBody").await
        && let Some((code, text, detail)) = envelope(&body)
    {
        if let Some(by_code) = class_of_code(&code).filter(|c| *c != ErrorClass::Invalid) {
            // Upload refusals come as 400 with a code that says what is wrong.
            if !class.is_transient() {
                class = by_code;
            }
        }
        message = format!("{status}: {code}: {text}");
        if let Some(detail) = detail {
            message = format!("{message} ({detail})");
        }
    }
    let error = CopyError::new(class, action, message);
    match retry_after {
        Some(wait) => error.with_retry_after(wait),
        None => error,
    }
}

/// `host[:port]` as requests name it.
pub(crate) fn host_port(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => String::new(),
    }
}

/// The first error of an OCI error envelope: its code (at most 64 characters), message and
/// detail (at most 300 each), without control characters.
pub fn envelope(body: &[u8]) -> Option<(String, String, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        detail: serde_json::Value,
    }
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    let first = envelope.errors.into_iter().next()?;
    let printable = |text: &str, max: usize| -> String {
        text.chars().filter(|c| !c.is_control()).take(max).collect()
    };
    let detail = match &first.detail {
        serde_json::Value::Null => None,
        serde_json::Value::String(text) if text.is_empty() => None,
        serde_json::Value::String(text) => Some(text.clone()),
        other => Some(path_error(other).unwrap_or_else(|| other.to_string())),
    };
    Some((
        printable(&first.code, 64),
        printable(&first.message, ERROR_MESSAGE_CHARS),
        detail.map(|d| printable(&d, ERROR_MESSAGE_CHARS)),
    ))
}

/// Distribution's filesystem driver sends a Go `PathError` as the detail of an `UNKNOWN` 500
/// (`{"Op":"write","Path":…,"Err":28}`, directly or under `Enclosed`): said in words, so that
/// a full disk reads "No space left on device" (the errno as Linux names it).
fn path_error(detail: &serde_json::Value) -> Option<String> {
    let error = detail.get("Enclosed").unwrap_or(detail);
    let op = error.get("Op")?.as_str()?;
    let path = error.get("Path")?.as_str()?;
    let errno = i32::try_from(error.get("Err")?.as_i64()?).ok()?;
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    Some(format!("{op} {path}: {text} on the registry's host"))
}

fn class_of_code(code: &str) -> Option<ErrorClass> {
    Some(match code {
        "UNAUTHORIZED" => ErrorClass::Unauthorized,
        "DENIED" => ErrorClass::Denied,
        "BLOB_UNKNOWN" | "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "NOT_FOUND" => ErrorClass::NotFound,
        "DIGEST_INVALID" | "SIZE_INVALID" => ErrorClass::DigestMismatch,
        "TOOMANYREQUESTS" => ErrorClass::Throttled,
        "MANIFEST_INVALID"
        | "MANIFEST_BLOB_UNKNOWN"
        | "NAME_INVALID"
        | "TAG_INVALID"
        | "UNSUPPORTED" => ErrorClass::Invalid,
        _ => return None,
    })
}

/// reqwest's own text stops at "error sending request"; the cause is what a reader needs.
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> reqwest::Url {
        reqwest::Url::parse(text).expect("url")
    }

    #[test]
    fn redirects_are_bounded_in_scheme_hops_loops_and_addresses() {
        let policy = Redirects::default();
        let start = [url("https://registry.example/v2/x/blobs/sha256:1")];
        assert_eq!(
            redirect_refusal(&policy, &url("https://cdn.example/b"), &start),
            None
        );
        assert!(redirect_refusal(&policy, &url("file:///etc/passwd"), &start).is_some());
        assert!(redirect_refusal(&policy, &start[0], &start).is_some_and(|r| r.contains("loop")));
        let many: Vec<_> = (0..6)
            .map(|i| url(&format!("https://a.example/{i}")))
            .collect();
        assert!(redirect_refusal(&policy, &url("https://a.example/x"), &many).is_some());
        let strict = Redirects {
            allow_private: false,
            ..policy
        };
        for private in [
            "http://127.0.0.1:5000/x",
            "http://10.1.2.3/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://[::ffff:192.168.0.1]/x",
            "http://localhost/x",
        ] {
            assert!(
                redirect_refusal(&strict, &url(private), &start).is_some(),
                "{private}"
            );
        }
        assert_eq!(
            redirect_refusal(&strict, &url("https://cdn.example/b"), &start),
            None
        );
    }

    #[test]
    fn error_envelopes_are_read_short_and_printable() {
        let body = format!(
            r#"{{"errors":[{{"code":"DENIED","message":"no\nway {}"}}]}}"#,
            "x".repeat(1000)
        );
        let (code, message, _) = envelope(body.as_bytes()).expect("envelope");
        assert_eq!(code, "DENIED");
        assert!(message.starts_with("noway") && message.len() == ERROR_MESSAGE_CHARS);
        assert!(envelope(b"<html>internal</html>").is_none());
    }

    #[test]
    fn a_full_disk_behind_distribution_reads_as_such() {
        // What distribution 2.8 answers when its filesystem driver gets ENOSPC.
        let body = br#"{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":{"Op":"write","Path":"/var/lib/registry/_uploads/1/data","Err":28}}]}"#;
        let (code, _, detail) = envelope(body).expect("envelope");
        assert_eq!(code, "UNKNOWN");
        let detail = detail.expect("a detail");
        assert!(
            detail.starts_with("write /var/lib/registry/_uploads/1/data: No space left on device"),
            "{detail}"
        );
        let other =
            br#"{"errors":[{"code":"UNKNOWN","message":"x","detail":{"why":"bad\nthing"}}]}"#;
        let (_, _, detail) = envelope(other).expect("envelope");
        assert_eq!(detail.as_deref(), Some(r#"{"why":"bad\nthing"}"#));
        let none = br#"{"errors":[{"code":"DENIED","message":"x"}]}"#;
        assert_eq!(envelope(none).expect("envelope").2, None);
    }
}
