//! `privateer-bench webhook`: `privateer webhook` (release build) on loopback with the local
//! control plane, its five ImageMirrors Ready in the cache, and `oha` posting a 5-container
//! Pod AdmissionReview over TLS with keep-alive. Reports requests/s and p50/p99 latency at
//! concurrency 1, 16 and 64 (open throttle), at a fixed 2,000 requests/s, and the webhook's
//! RSS. The generator shares the two cores with the webhook and the API server.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use privateer_api::{ImageMirror, ImageMirrorSpec};
use privateer_e2e::TestEnv;
use privateer_e2e::https::{Connection, client_config};
use privateer_e2e::pki::Ca;
use privateer_e2e::process::{Managed, free_port, rss_kib};
use serde_json::{Value, json};

use crate::Args;

const TARGET: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const SECONDS_PER_POINT: u32 = 10;

fn review_body() -> anyhow::Result<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/webhook/tests/fixtures/review-pod-5.json"
    );
    std::fs::read_to_string(path).with_context(|| format!("read {path}"))
}

/// The five images of the review, each with a Ready ImageMirror.
async fn seed_mirrors(env: &TestEnv, body: &str) -> anyhow::Result<usize> {
    env.install_crd().await?;
    let client = env.client();
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": "privateer"}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let review: Value = serde_json::from_str(body)?;
    let containers = review["request"]["object"]["spec"]["containers"]
        .as_array()
        .context("review without containers")?;
    let mirrors: Api<ImageMirror> = Api::all(client);
    for container in containers {
        let image = container["image"]
            .as_str()
            .context("container without image")?;
        let reference = privateer_image::Reference::parse(image)?;
        let name = privateer_image::object_name(&reference);
        let mirror = ImageMirror::new(&name, ImageMirrorSpec::for_source(image));
        mirrors.create(&PostParams::default(), &mirror).await?;
        let target = format!(
            "{TARGET}/mirror/{}@sha256:{}",
            reference.name(),
            "ab".repeat(32)
        );
        let status = json!({"status": {"phase": "Ready", "targetImage": target}});
        mirrors
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
    }
    Ok(containers.len())
}

struct Point {
    label: String,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn oha(
    address: &str,
    ca: &Path,
    body: &Path,
    concurrency: u32,
    rate: Option<u32>,
) -> anyhow::Result<Point> {
    let mut command = Command::new("oha");
    command
        .args(["--no-tui", "--output-format", "json", "-m", "POST"])
        .args(["-H", "content-type: application/json"])
        .arg("-D")
        .arg(body)
        .arg("--cacert")
        .arg(ca)
        .args(["-z", &format!("{SECONDS_PER_POINT}s")])
        .args(["-c", &concurrency.to_string()])
        // Requests in flight when the time is up finish instead of counting as errors.
        .arg("--wait-ongoing-requests-after-deadline");
    if let Some(rate) = rate {
        command.args(["-q", &rate.to_string()]);
    }
    command.arg(format!("https://{address}/mutate"));
    let out = command
        .output()
        .context("run oha (just bench installs it)")?;
    if !out.status.success() {
        bail!("oha failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let report: Value = serde_json::from_slice(&out.stdout).context("oha's JSON")?;
    let ms = |v: &Value| v.as_f64().unwrap_or(f64::NAN) * 1000.0;
    let statuses = report["statusCodeDistribution"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let errors = statuses
        .iter()
        .filter(|(code, _)| code.as_str() != "200")
        .map(|(_, n)| n.as_u64().unwrap_or(0))
        .sum::<u64>()
        + report["errorDistribution"]
            .as_object()
            .map(|e| e.values().map(|n| n.as_u64().unwrap_or(0)).sum::<u64>())
            .unwrap_or(0);
    Ok(Point {
        label: match rate {
            Some(rate) => format!("{rate} req/s fixed, {concurrency} connections"),
            None => format!("concurrency {concurrency}"),
        },
        rps: report["summary"]["requestsPerSec"]
            .as_f64()
            .unwrap_or(f64::NAN),
        p50_ms: ms(&report["latencyPercentiles"]["p50"]),
        p99_ms: ms(&report["latencyPercentiles"]["p99"]),
        errors,
    })
}

pub fn main(args: &Args) -> anyhow::Result<()> {
    if Command::new("oha").arg("--version").output().is_err() {
        bail!("oha is missing: run `just bench webhook` (it installs oha into the cache)");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let env = runtime.block_on(TestEnv::builder().control_plane().start())?;
    let body = review_body()?;
    let images = runtime.block_on(seed_mirrors(&env, &body))?;
    let body_file = env.dir.join("review.json");
    std::fs::write(&body_file, &body)?;
    let ca = Ca::new("bench-ca")?;
    let cert = ca.serving_cert(&env.dir, "webhook", &[])?;
    let ca_file = env.dir.join("ca.pem");
    ca.write_cert(&ca_file)?;
    let address = format!("127.0.0.1:{}", free_port()?);
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let config = env.dir.join("webhook.yaml");
    std::fs::write(
        &config,
        format!(
            "target: {{registry: {TARGET}}}
webhook: {{listen: \"{address}\", tlsCertFile: \"{}\", tlsKeyFile: \"{}\"}}
metrics: {{listen: \"{metrics}\"}}
",
            cert.cert.display(),
            cert.key.display()
        ),
    )?;
    let mut command = Command::new(&args.privateer);
    command
        .args(["webhook", "--config"])
        .arg(&config)
        .env_clear()
        .env("KUBECONFIG", env.kubeconfig.as_ref().context("kubeconfig")?)
        .env("RUST_LOG", "warn");
    let mut webhook = Managed::spawn("webhook", command, &env.dir)?;
    // Ready (caches synced), and the answer really rewrites five images.
    let tls = client_config(&[&ca.cert_pem])?;
    let mut answered = None;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(200));
        webhook.check_alive()?;
        let ready = Command::new("curl")
            .args(["-sf", &format!("http://{metrics}/readyz")])
            .output()?;
        if ready.status.success() {
            answered = Some(runtime.block_on(async {
                let mut conn = Connection::open(address.parse()?, tls.clone()).await?;
                conn.post("/mutate", body.clone().into()).await
            })?);
            break;
        }
    }
    let (status, answer_bytes) = answered.context("the webhook never became ready")?;
    let answer: Value = serde_json::from_slice(&answer_bytes)?;
    // The patch travels as base64, as the API documents.
    let Some(patch) = answer["response"]["patch"]
        .as_str()
        .filter(|_| status == 200)
    else {
        bail!("unexpected answer {status}: {answer}");
    };
    // What the same answer weighs with kube-core's own encoding, a JSON array of numbers.
    use base64::Engine as _;
    let patch_bytes = base64::engine::general_purpose::STANDARD.decode(patch)?;
    let mut as_numbers = answer.clone();
    as_numbers["response"]["patch"] = json!(patch_bytes);
    let numbers_len = serde_json::to_vec(&as_numbers)?.len();
    eprintln!("webhook ready; {images} images rewritten per request");
    let mut points = Vec::new();
    for concurrency in [1, 16, 64] {
        eprintln!("concurrency {concurrency} ...");
        points.push(oha(&address, &ca_file, &body_file, concurrency, None)?);
    }
    eprintln!("2000 req/s ...");
    points.push(oha(&address, &ca_file, &body_file, 16, Some(2000))?);
    let (rss, peak) = rss_kib(webhook.pid());
    webhook.stop();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "privateer webhook: POST /mutate, 5-container Pod AdmissionReview ({} bytes), TLS keep-alive, \
         mirrors cached; oha on the same 2 cores, {SECONDS_PER_POINT} s per point\n",
        body.len()
    );
    let _ = writeln!(
        out,
        "answer: {} bytes with the patch in base64 ({numbers_len} bytes as a JSON array of numbers)\n",
        answer_bytes.len()
    );
    let _ = writeln!(out, "| load | requests/s | p50 | p99 | errors |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for p in &points {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {} |",
            p.label, p.rps, p.p50_ms, p.p99_ms, p.errors
        );
    }
    let _ = writeln!(
        out,
        "\nwebhook RSS after the run: {} MiB (peak {} MiB)",
        rss / 1024,
        peak / 1024
    );
    print!("{out}");
    crate::write_out(args, &out)
}
