//! `moto_server` (PyPI `moto[server]`) serving the ECR API on loopback.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;

use crate::process::{Managed, free_port};
use crate::tools;

/// Credentials moto accepts (it checks none, but the SDK wants some).
pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";
pub const REGION: &str = "eu-west-1";
/// moto's default account.
pub const ACCOUNT: &str = "123456789012";

/// Static credentials moto accepts.
pub fn credentials() -> aws_sdk_ecr::config::Credentials {
    aws_sdk_ecr::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "privateer-test")
}

pub struct Moto {
    /// `http://<address>:<port>`
    pub endpoint: String,
    pub process: Managed,
}

impl Moto {
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_at(dir, std::net::Ipv4Addr::LOCALHOST)
    }

    /// moto listening on `address` (the node's bridge address, where Pods reach it).
    pub fn start_at(dir: &Path, address: std::net::Ipv4Addr) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut command = Command::new(tools::moto_server());
        command.args(["-H", &address.to_string(), "-p", &port.to_string()]);
        let mut process = Managed::spawn("moto", command, dir)?;
        process.wait_for_port((address, port).into(), Duration::from_secs(60))?;
        Ok(Self {
            endpoint: format!("http://{address}:{port}"),
            process,
        })
    }

    /// An ECR client against this moto, as privateer's code builds one from the environment.
    pub async fn ecr_client(&self) -> aws_sdk_ecr::Client {
        let config = aws_sdk_ecr::Config::builder()
            .behavior_version(aws_sdk_ecr::config::BehaviorVersion::latest())
            .region(aws_sdk_ecr::config::Region::new(REGION))
            .credentials_provider(credentials())
            .endpoint_url(&self.endpoint)
            .build();
        aws_sdk_ecr::Client::from_conf(config)
    }

    /// The `(user, password)` that moto's GetAuthorizationToken hands out.
    pub async fn registry_credentials(&self) -> anyhow::Result<(String, String)> {
        let out = self
            .ecr_client()
            .await
            .get_authorization_token()
            .send()
            .await
            .context("GetAuthorizationToken")?;
        let token = out
            .authorization_data()
            .first()
            .and_then(|d| d.authorization_token())
            .context("moto returned no authorization token")?;
        let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(token)?)?;
        let (user, password) = decoded
            .split_once(':')
            .context("token is not user:password")?;
        Ok((user.to_owned(), password.to_owned()))
    }
}

impl Moto {
    /// Role ARNs assumed so far through STS (`AssumeRole*`), from moto's state dump.
    pub async fn assumed_roles(&self) -> anyhow::Result<Vec<String>> {
        use http_body_util::{BodyExt, Empty};
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;

        let client: Client<_, Empty<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let url: http::Uri = format!("{}/moto-api/data.json", self.endpoint).parse()?;
        let response = client.get(url).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "moto: {}",
            response.status()
        );
        let body = response.into_body().collect().await?.to_bytes();
        let state: serde_json::Value = serde_json::from_slice(&body)?;
        Ok(state["sts"]["AssumedRole"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|role| role["role_arn"].as_str().map(str::to_owned))
            .collect())
    }

    /// Make `DescribeImageScanFindings` return `results` (moto's API for custom findings).
    pub async fn set_scan_findings(&self, results: serde_json::Value) -> anyhow::Result<()> {
        use http_body_util::Full;
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;

        let client: Client<_, Full<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let body = serde_json::json!({"results": results, "region": REGION}).to_string();
        let request = http::Request::post(format!(
            "{}/moto-api/static/ecr/scan-finding-results",
            self.endpoint
        ))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))?;
        let response = client.request(request).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "moto refused the findings: {}",
            response.status()
        );
        Ok(())
    }
}
