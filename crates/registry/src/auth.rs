//! The registry auth handshake's remote data, parsed without trusting it: the `WWW-Authenticate`
//! challenge of a 401 and the token endpoint's answer. Pure functions, fuzzed
//! (`fuzz/fuzz_targets/challenge.rs`, `token.rs`).

use http::HeaderValue;

/// What a registry asked for in its 401.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// The Docker token flow: get a token from `realm` for `service` and `scope`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// HTTP basic auth.
    Basic,
}

/// Parse a `WWW-Authenticate` value; the first Bearer or Basic challenge wins.
pub fn parse_challenge(header: &str) -> Result<Challenge, String> {
    let mut last_error = None;
    for challenge in http_auth::parser::ChallengeParser::new(header) {
        let challenge = match challenge {
            Ok(c) => c,
            Err(e) => {
                last_error = Some(e.to_string());
                break;
            }
        };
        let param = |name: &str| {
            challenge
                .params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.to_unescaped())
        };
        if challenge.scheme.eq_ignore_ascii_case("bearer") {
            let realm = param("realm").ok_or("a Bearer challenge without realm")?;
            return Ok(Challenge::Bearer {
                realm,
                service: param("service"),
                scope: param("scope"),
            });
        }
        if challenge.scheme.eq_ignore_ascii_case("basic") {
            return Ok(Challenge::Basic);
        }
    }
    Err(match last_error {
        Some(e) => format!("unreadable WWW-Authenticate challenge: {e}"),
        None => "no Bearer or Basic challenge in WWW-Authenticate".to_owned(),
    })
}

/// The `Authorization` value for the token in a token endpoint's answer (`token` or
/// `access_token`). A token that cannot travel in a header (CR, LF, other control bytes) is
/// refused here, where oci-client would panic.
pub fn parse_token(body: &[u8]) -> Result<HeaderValue, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("the token answer is not JSON: {e}"))?;
    let token = answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token.filter(|t| !t.is_empty()))
        .ok_or("the token answer has neither token nor access_token")?;
    bearer(&token)
}

/// `Bearer <token>` as a header value, refused when the token holds bytes a header cannot.
pub fn bearer(token: &str) -> Result<HeaderValue, String> {
    if let Some(bad) = token.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        return Err(format!(
            "the token holds byte 0x{bad:02x}, which cannot travel in an Authorization header"
        ));
    }
    let mut value = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| "the token is not a valid header value".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

/// `Basic base64(user:password)`.
pub fn basic(username: &str, password: &str) -> Result<HeaderValue, String> {
    use base64::Engine as _;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .map_err(|_| "the credentials are not a valid header value".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_challenges_parse() {
        let challenge = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        )
        .expect("parses");
        assert_eq!(
            challenge,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Ok(Challenge::Basic)
        );
        assert!(parse_challenge("Bearer service=\"x\"").is_err());
        assert!(parse_challenge("Negotiate").is_err());
        assert!(parse_challenge("\"").is_err());
    }

    #[test]
    fn tokens_that_cannot_be_headers_are_refused_not_panicked_on() {
        assert!(parse_token(br#"{"token":"abc.def"}"#).is_ok());
        assert!(parse_token(br#"{"access_token":"abc"}"#).is_ok());
        let crlf = parse_token(br#"{"token":"abc\r\nX-Evil: 1"}"#).expect_err("refused");
        assert!(crlf.contains("0x0d"), "{crlf}");
        assert!(parse_token(br#"{"token":""}"#).is_err());
        assert!(parse_token(b"<html>").is_err());
        assert!(parse_token("{\"token\":\"é\"}".as_bytes()).is_err());
    }
}
