//! The node's instance metadata service (IMDSv2) on 169.254.169.254:80, handing out the node
//! role's credentials (moto's, which accepts any) as EC2 does on an EKS node: Pods without a
//! role of their own reach it through their gateway, and the AWS SDK's default credential chain
//! ends there. The address is put on the node's bridge, so it exists only while the node does.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The instance profile's role name.
pub const ROLE: &str = "privateer-node";
const TOKEN: &str = "privateer-node-imds-token";

/// The server's thread; dropping it stops the thread and frees the port.
pub struct Imds {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Imds {
    /// Adds the address to `bridge` and serves on it.
    pub fn start(bridge: &str) -> anyhow::Result<Self> {
        crate::node::network::run(
            "ip",
            &["addr", "add", &format!("{ADDRESS}/32"), "dev", bridge],
        )?;
        let listener = TcpListener::bind((ADDRESS, 80)).context("bind the IMDS address")?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = answer(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One request per connection (`Connection: close`): enough for the SDK's IMDS client.
fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 << 10 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&request);
    let mut words = text.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let has_token = text.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("x-aws-ec2-metadata-token:")
            && l.contains(TOKEN)
    });
    let credentials_path = "/latest/meta-data/iam/security-credentials/";
    let (status, body) = match (method, path) {
        ("PUT", "/latest/api/token") => ("200 OK", TOKEN.to_owned()),
        _ if !has_token => ("401 Unauthorized", String::new()),
        ("GET", p) if p == credentials_path => ("200 OK", ROLE.to_owned()),
        ("GET", p) if p.strip_prefix(credentials_path) == Some(ROLE) => ("200 OK", credentials()),
        ("GET", "/latest/meta-data/placement/region") => ("200 OK", crate::moto::REGION.to_owned()),
        _ => ("404 Not Found", String::new()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nX-Aws-Ec2-Metadata-Token-Ttl-Seconds: 21600\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn credentials() -> String {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    // Valid for an hour from now, as EC2 hands them out.
    let now = Timestamp::now();
    let expires = now
        .checked_add(SignedDuration::from_secs(3600))
        .unwrap_or(now);
    serde_json::json!({
        "Code": "Success",
        "LastUpdated": now.to_string(),
        "Type": "AWS-HMAC",
        "AccessKeyId": crate::moto::ACCESS_KEY,
        "SecretAccessKey": crate::moto::SECRET_KEY,
        "Token": "privateer-node-session",
        "Expiration": expires.to_string(),
    })
    .to_string()
}
