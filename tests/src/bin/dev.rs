//! `privateer-dev up|down|status`: the local environment for humans (`just dev-up`).
//!
//! `up` starts everything, writes `<dir>/kubeconfig`, `<dir>/env` (source it) and
//! `<dir>/config.yaml` (a privateer configuration wired to this environment), then keeps the
//! environment until SIGTERM or SIGINT. `down` stops it; `status` says what runs. `seed`
//! pushes synthetic images under Docker Hub names into the "public" source registry (served
//! for docker.io through the `sources.endpoints` override of the dev configuration).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use privateer_api::Config;
use privateer_e2e::process::{free_port, pid_alive};
use privateer_e2e::{TestEnv, moto};

const USAGE: &str = "usage: privateer-dev up|down|status|seed [DIR] (default DIR: target/dev)
       privateer-dev image BINARY          (privateer's image as an OCI layout in target/image)
       privateer-dev image-push REF [ARGS] (that image copied to REF by `privateer copy ARGS`)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(args.get(1).map(String::as_str).unwrap_or("target/dev"));
    match args.first().map(String::as_str) {
        Some("up") => up(&dir).await,
        Some("down") => down(&dir),
        Some("status") => status(&dir),
        Some("seed") => seed().await,
        Some("image") => image(Path::new(args.get(1).context(USAGE)?)),
        Some("image-push") => image_push(args.get(1).context(USAGE)?, &args[2..]).await,
        _ => bail!(USAGE),
    }
}

async fn up(dir: &Path) -> anyhow::Result<()> {
    if let Some(pid) = read_pid(&dir.join("dev.pid"))
        && pid_alive(pid)
    {
        bail!("the environment already runs (pid {pid}); `just dev-down` stops it");
    }
    let dir = std::path::absolute(dir)?;
    let started = Instant::now();
    let env = TestEnv::full().dir(dir.clone()).start().await?;
    let source = env.source.as_ref().context("source registry")?.host.clone();
    let target = env.target.as_ref().context("target registry")?.host.clone();
    let moto = env.moto.as_ref().context("moto")?.endpoint.clone();

    let webhook_port = free_port()?;
    let cert = env.ca.serving_cert(&dir, "webhook", &[])?;
    let mut config = Config::default();
    config.target.registry = format!("{}.dkr.ecr.{}.amazonaws.com", moto::ACCOUNT, moto::REGION);
    config.target.ecr.region = moto::REGION.into();
    config.target.ecr.endpoint_url = moto.clone();
    config.target.ecr.registry_endpoint = format!("http://{target}");
    config.sources.endpoints.insert(
        "docker.io".into(),
        privateer_api::config::EndpointOverride {
            url: format!("http://{source}"),
            ca_file: String::new(),
        },
    );
    config.webhook.listen = format!("127.0.0.1:{webhook_port}");
    config.webhook.tls_cert_file = cert.cert.display().to_string();
    config.webhook.tls_key_file = cert.key.display().to_string();
    config.metrics.listen = format!("127.0.0.1:{}", free_port()?);
    config.controller.leader_election.lease_duration = std::time::Duration::from_secs(5).into();
    let problems = config.validate();
    if !problems.is_empty() {
        bail!("the dev configuration is invalid: {problems:?}");
    }
    let privateer_image = env.privateer_image.clone().context("privateer's image")?;
    config.copy.job.image = privateer_image.clone();
    let config_path = dir.join("config.yaml");
    std::fs::write(&config_path, serde_yaml::to_string(&config)?)?;
    // Helm values for privateer in the cluster (`just demo`): the image from the environment's
    // images registry, the chart's defaults otherwise.
    let (repository, tag) = privateer_image
        .rsplit_once(':')
        .context("the image has a tag")?;
    let values = serde_json::json!({
        "image": {"repository": repository, "tag": tag},
        "config": {
            "target": serde_json::to_value(&config.target)?,
            "sources": {"endpoints": serde_json::to_value(&config.sources.endpoints)?},
        },
    });
    std::fs::write(dir.join("values.yaml"), serde_yaml::to_string(&values)?)?;

    let kubeconfig = env.kubeconfig.clone().context("kubeconfig")?;
    let pids: Vec<String> = env.pids().iter().map(u32::to_string).collect();
    std::fs::write(dir.join("pids"), pids.join("\n") + "\n")?;
    std::fs::write(dir.join("dev.pid"), std::process::id().to_string())?;
    let exports = [
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("PATH", format!("{}:$PATH", env.bin_dir.display())),
        ("PRIVATEER_SOURCE_REGISTRY", source),
        ("PRIVATEER_TARGET_REGISTRY", target),
        ("AWS_ENDPOINT_URL_ECR", moto),
        ("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY.into()),
        ("AWS_REGION", moto::REGION.into()),
        ("PRIVATEER_DEV_CONFIG", config_path.display().to_string()),
        (
            "PRIVATEER_DEV_VALUES",
            dir.join("values.yaml").display().to_string(),
        ),
        ("PRIVATEER_IMAGE", privateer_image.clone()),
        (
            "PRIVATEER_DEV_CA",
            dir.join("pki/ca.crt").display().to_string(),
        ),
        (
            "PRIVATEER_DEV_WEBHOOK_URL",
            format!("https://127.0.0.1:{webhook_port}"),
        ),
    ];
    let text: String = exports
        .iter()
        .map(|(k, v)| format!("export {k}=\"{v}\"\n"))
        .collect();
    // Written last: its presence means "ready".
    std::fs::write(dir.join("env.partial"), text)?;
    std::fs::rename(dir.join("env.partial"), dir.join("env"))?;
    eprintln!(
        "environment up in {:.1}s: source . {}/env",
        started.elapsed().as_secs_f64(),
        dir.display()
    );

    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = std::fs::remove_file(dir.join("env"));
    drop(env);
    let _ = std::fs::remove_file(dir.join("dev.pid"));
    Ok(())
}

/// Builds privateer's image from the release binary into `target/image`.
fn image(binary: &Path) -> anyhow::Result<()> {
    use privateer_e2e::product_image;
    let image = product_image::build(binary)?;
    let tag = env!("CARGO_PKG_VERSION");
    product_image::write_layout(&product_image::layout_dir(), &image, tag)?;
    let size: usize = image.layers.iter().map(|l| l.data.len()).sum();
    println!(
        "privateer:{tag} {} ({:.1} MiB compressed) in {}",
        image.manifest.digest,
        size as f64 / (1 << 20) as f64,
        product_image::layout_dir().display()
    );
    Ok(())
}

/// Pushes `target/image` into a registry on loopback, then `privateer copy`s it to `reference`
/// with `copy_args` (ECR: the AWS credential chain; others: `--dest-authfile FILE`).
async fn image_push(reference: &str, copy_args: &[String]) -> anyhow::Result<()> {
    use privateer_e2e::{images::Pusher, product_image, registry::Registry};
    let (image, tag) = product_image::read_layout(&product_image::layout_dir())?;
    let dir = std::env::temp_dir().join(format!("privateer-image-push-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = async {
        let local = Registry::start("image", &dir, None)?;
        Pusher::new(privateer_e2e::registry::oci_client(), local.auth())
            .push_image(&local.host, "privateer", &tag, &image)
            .await?;
        // The release binary beside this one's build, or PRIVATEER_BIN.
        let privateer = std::env::var_os("PRIVATEER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                privateer_e2e::tools::workspace_dir().join("target/release/privateer")
            });
        let status = std::process::Command::new(&privateer)
            .arg("copy")
            .arg(format!("{}/privateer:{tag}", local.host))
            .arg(reference)
            .args(["--plain-http", &local.host])
            .args(copy_args)
            .status()
            .with_context(|| format!("run {}", privateer.display()))?;
        if !status.success() {
            bail!("privateer copy to {reference} failed ({status})");
        }
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The images the demo and `examples/` use, under their Docker Hub names: each runs (a static
/// busybox; `nginx:1.27` serves HTTP on port 80 with busybox `httpd`), and the indexes keep an
/// amd64 child that really runs on this node.
async fn seed() -> anyhow::Result<()> {
    use privateer_e2e::images::{Format, Index, Pusher};
    let host = std::env::var("PRIVATEER_SOURCE_REGISTRY")
        .context("PRIVATEER_SOURCE_REGISTRY is not set: `source target/dev/env` first")?;
    let pusher = Pusher::new(
        privateer_e2e::registry::oci_client(),
        oci_client::secrets::RegistryAuth::Anonymous,
    );
    let httpd = ["httpd", "-f", "-p", "80", "-h", "/www"];
    let nginx = Index::busybox(
        Format::Oci,
        "nginx 1.27",
        &["linux/amd64", "linux/arm64"],
        &httpd,
    )?;
    pusher
        .push_index(&host, "library/nginx", "1.27", &nginx)
        .await?;
    let alpine = Index::busybox(
        Format::Docker,
        "alpine 3.20",
        &["linux/amd64", "linux/arm64", "linux/s390x"],
        &["sh"],
    )?;
    pusher
        .push_index(&host, "library/alpine", "3.20", &alpine)
        .await?;
    for (repository, tag, cmd) in [
        ("library/busybox", "1.36", &["sh"][..]),
        ("library/busybox", "latest", &["sh"][..]),
        ("library/redis", "7.2", &["sleep", "3600"][..]),
    ] {
        pusher.push_runnable(&host, repository, tag, cmd).await?;
    }
    println!(
        "seeded {host} with docker.io/library/{{nginx:1.27, alpine:3.20, busybox:1.36, busybox:latest, redis:7.2}}"
    );
    Ok(())
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
}

fn down(dir: &Path) -> anyhow::Result<()> {
    let children = read_pids(dir);
    if let Some(pid) = read_pid(&dir.join("dev.pid")).filter(|p| pid_alive(*p)) {
        signal(pid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if pid_alive(pid) {
            signal(pid, "KILL");
        }
    }
    // Whatever survived its parent (killed hard) is stopped by PID.
    for pid in children.iter().copied().filter(|p| pid_alive(*p)) {
        signal(pid, "KILL");
    }
    std::thread::sleep(Duration::from_millis(200));
    let left: Vec<u32> = children.into_iter().filter(|p| pid_alive(*p)).collect();
    for file in ["dev.pid", "pids", "env"] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    if !left.is_empty() {
        bail!("processes still running: {left:?}");
    }
    println!("environment stopped");
    Ok(())
}

fn status(dir: &Path) -> anyhow::Result<()> {
    let Some(pid) = read_pid(&dir.join("dev.pid")) else {
        println!("not running (no {}/dev.pid)", dir.display());
        return Ok(());
    };
    println!(
        "privateer-dev  pid {pid:<8} {}",
        if pid_alive(pid) { "running" } else { "gone" }
    );
    for child in read_pids(dir) {
        let name = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
        let state = if pid_alive(child) { "running" } else { "gone" };
        println!("{:<14} pid {child:<8} {state}", name.trim());
    }
    if dir.join("env").exists() {
        println!("ready: source {}/env", dir.display());
    }
    Ok(())
}
