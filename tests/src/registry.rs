//! Debian's `docker-registry` (distribution 2.8) on a free loopback port, optionally behind
//! htpasswd basic auth, its access log on so tests can count the requests a client sent.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::{Managed, free_port};
use crate::tools;

/// One running registry.
pub struct Registry {
    /// `<address>:<port>`: what image references name.
    pub host: String,
    /// `(user, password)` when htpasswd auth is on.
    pub credentials: Option<(String, String)>,
    pub process: Managed,
    config: std::path::PathBuf,
    log_dir: std::path::PathBuf,
}

impl Registry {
    /// Starts a registry on loopback storing under `dir/<name>`; `credentials` switches on
    /// htpasswd auth.
    pub fn start(
        name: &str,
        dir: &Path,
        credentials: Option<(&str, &str)>,
    ) -> anyhow::Result<Self> {
        Self::start_at(name, dir, credentials, Ipv4Addr::LOCALHOST)
    }

    /// The same, listening on `address` (the node's bridge address, where Pods reach it).
    pub fn start_at(
        name: &str,
        dir: &Path,
        credentials: Option<(&str, &str)>,
        address: Ipv4Addr,
    ) -> anyhow::Result<Self> {
        let root = dir.join(name);
        std::fs::create_dir_all(root.join("data"))?;
        let port = free_port()?;
        let auth = match credentials {
            Some((user, password)) => {
                // Cost 4, bcrypt's minimum: every request is checked, and tests make many.
                let hash = bcrypt::hash(password, 4)?;
                let file = root.join("htpasswd");
                std::fs::write(&file, format!("{user}:{hash}\n"))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: {name}\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        let config = root.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {address}:{port}\n  secret: privateer-test-{name}\n{auth}",
                root.join("data").display()
            ),
        )?;
        let process = serve(&config, dir, name, (address, port).into())?;
        Ok(Self {
            host: format!("{address}:{port}"),
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
            process,
            config,
            log_dir: dir.to_owned(),
        })
    }

    /// A registry that serves the OCI 1.1 referrers API (go-containerregistry's, built by
    /// `tests/peers/build.sh`), on loopback, blobs under `dir/<name>`, no auth.
    pub fn start_with_referrers_api(name: &str, dir: &Path) -> anyhow::Result<Self> {
        let root = dir.join(name);
        std::fs::create_dir_all(&root)?;
        let port = free_port()?;
        let addr: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
        let mut command = Command::new(tools::peer("referrers-registry"));
        command
            .arg("--address")
            .arg(addr.to_string())
            .arg("--blobs")
            .arg(&root);
        let mut process = Managed::spawn(&format!("registry-{name}"), command, dir)?;
        process.wait_for_port(addr, Duration::from_secs(20))?;
        Ok(Self {
            host: addr.to_string(),
            credentials: None,
            process,
            config: root.join("none"),
            log_dir: dir.to_owned(),
        })
    }

    /// Stop and start again on the same port with the same storage: an outage that heals.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.stop();
        let addr: SocketAddr = self.host.parse()?;
        let name = self
            .process
            .name()
            .trim_start_matches("registry-")
            .to_owned();
        self.process = serve(&self.config, &self.log_dir, &name, addr)?;
        Ok(())
    }

    /// The requests a client with `user_agent` (its first word, e.g. `privateer/`) sent so far,
    /// as (method, path, status), from the registry's access log.
    pub fn requests_from(&self, user_agent: &str) -> Vec<(String, String, u16)> {
        self.process
            .log_text()
            .lines()
            .filter_map(|line| {
                // `host - - [time] "METHOD /path HTTP/1.1" status bytes "referer" "agent"`
                let (_, rest) = line.split_once(" \"")?;
                let (request, rest) = rest.split_once('"')?;
                let status = rest.split_whitespace().next()?.parse().ok()?;
                let agent = rest.rsplit('"').nth(1)?;
                let mut words = request.split_whitespace();
                let (method, path) = (words.next()?, words.next()?);
                agent
                    .starts_with(user_agent)
                    .then(|| (method.to_owned(), path.to_owned(), status))
            })
            .collect()
    }

    /// The `oci-client` auth for this registry.
    pub fn auth(&self) -> oci_client::secrets::RegistryAuth {
        match &self.credentials {
            Some((user, password)) => {
                oci_client::secrets::RegistryAuth::Basic(user.clone(), password.clone())
            }
            None => oci_client::secrets::RegistryAuth::Anonymous,
        }
    }
}

fn serve(config: &Path, log_dir: &Path, name: &str, addr: SocketAddr) -> anyhow::Result<Managed> {
    let mut command = Command::new(tools::docker_registry());
    command.arg("serve").arg(config);
    let mut process = Managed::spawn(&format!("registry-{name}"), command, log_dir)?;
    process.wait_for_port(addr, Duration::from_secs(20))?;
    Ok(process)
}

/// An `oci-client` speaking plain HTTP to loopback registries.
pub fn oci_client() -> oci_client::Client {
    oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    })
}
