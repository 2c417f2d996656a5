//! Real monitoring for the metric-gate tests, on loopback only: an exporter whose one
//! metric the test sets, a real Prometheus (testbed/prometheus.sh) scraping it every
//! second, and a real Alertmanager (testbed/alertmanager.sh) the test posts alerts to.
//! Each process has its own temp dir and port, and is killed when dropped.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::eventually;

/// Serves `/metrics` with one gauge, `kordon_test_errors`, set by the test.
pub struct Exporter {
    pub address: String,
    value: Arc<AtomicU64>,
}

impl Exporter {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let address = listener.local_addr().expect("address").to_string();
        let value = Arc::new(AtomicU64::new(0f64.to_bits()));
        let read = value.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = String::new();
                let _ = BufReader::new(&mut stream).read_line(&mut request);
                let v = f64::from_bits(read.load(Ordering::SeqCst));
                let body = format!(
                    "# TYPE kordon_test_errors gauge\nkordon_test_errors{{app=\"shop\"}} {v}\n"
                );
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { address, value }
    }

    pub fn set(&self, v: f64) {
        self.value.store(v.to_bits(), Ordering::SeqCst);
    }
}

/// When a connection opened, and when its asker closed it.
type Ask = (Instant, Option<Instant>);

/// A server that accepts every connection and never answers: a gate that takes as long
/// as its asker waits. It records when each connection opened and when the asker
/// closed it.
pub struct Silent {
    pub address: String,
    asks: Arc<Mutex<Vec<Ask>>>,
}

impl Silent {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let address = listener.local_addr().expect("address").to_string();
        let asks: Arc<Mutex<Vec<Ask>>> = Arc::default();
        let log = asks.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Ok(mut l) = log.lock() else { return };
                let i = l.len();
                l.push((Instant::now(), None));
                drop(l);
                let log = log.clone();
                // Reads what comes until the asker hangs up; writes nothing.
                std::thread::spawn(move || {
                    let mut sink = [0u8; 1024];
                    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                    if let Ok(mut l) = log.lock() {
                        l[i].1 = Some(Instant::now());
                    }
                });
            }
        });
        Self { address, asks }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Each connection: when it opened, and when the asker closed it.
    pub fn asks(&self) -> Vec<Ask> {
        self.asks.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until a connection opens after this call, and returns when it did.
    pub async fn next_ask(&self, limit: Duration) -> Instant {
        let before = self.asks().len();
        let start = Instant::now();
        loop {
            if let Some((opened, _)) = self.asks().get(before) {
                return *opened;
            }
            assert!(
                start.elapsed() < limit,
                "nothing asked {} within {limit:?}",
                self.url()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether a connection was open at `at`: opened before, not closed by then.
    pub fn asked_at(&self, at: Instant) -> bool {
        self.asks()
            .iter()
            .any(|(opened, closed)| *opened <= at && closed.is_none_or(|c| c > at))
    }
}

/// A process of the testbed, its data dir, and its loopback address.
struct Process {
    child: Child,
    dir: PathBuf,
    address: String,
    log: PathBuf,
}

impl Process {
    /// Runs `tool` (testbed/TOOL.sh) with `args(address, dir)` from a fresh temp dir;
    /// `config` is written to `dir/config.yml` first.
    fn start(tool: &str, config: &str, args: impl Fn(&str, &PathBuf) -> Vec<String>) -> Self {
        let script = super::repo_root().join(format!("testbed/{tool}.sh"));
        let out = Command::new(&script)
            .arg("--path")
            .output()
            .expect("testbed script");
        assert!(out.status.success(), "{tool}: {out:?}");
        let binary = String::from_utf8_lossy(&out.stdout).trim().to_string();
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kordon-{tool}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("config.yml"), config).expect("config");
        let address = free_address();
        let log = dir.join("log");
        let child = Command::new(binary)
            .args(args(&address, &dir))
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {tool}: {e}"));
        Self {
            child,
            dir,
            address,
            log,
        }
    }

    async fn ready(&mut self, what: &str) {
        let (address, log, child) = (self.address.clone(), self.log.clone(), &mut self.child);
        eventually(what, Duration::from_secs(30), || {
            if let Ok(Some(exit)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("{what}: it exited ({exit}):\n{log}");
            }
            let ok = get(&address, "/-/ready").is_some_and(|(s, _)| s == 200);
            async move { ok }
        })
        .await;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback address with a port free a moment ago.
fn free_address() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("address").to_string()
}

/// A real Prometheus scraping `exporter` every second.
pub struct Prometheus(Process);

impl Prometheus {
    pub async fn start(exporter: &Exporter) -> Self {
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: shop\n    static_configs:\n      - targets: ['{}']\n",
            exporter.address
        );
        let mut p = Process::start("prometheus", &config, |address, dir| {
            vec![
                "--config.file=config.yml".into(),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address={address}"),
                "--log.level=warn".into(),
            ]
        });
        p.ready("Prometheus to be ready").await;
        let prometheus = Self(p);
        // A scrape has landed: the gate's queries see the exporter from now on.
        eventually(
            "Prometheus to scrape the exporter",
            Duration::from_secs(30),
            || async { prometheus.series("kordon_test_errors") > 0 },
        )
        .await;
        prometheus
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.0.address)
    }

    /// How many series `query` returns now.
    pub fn series(&self, query: &str) -> usize {
        let path = format!(
            "/api/v1/query?query={}",
            query
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        );
        get(&self.0.address, &path)
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| v["data"]["result"].as_array().map(Vec::len))
            .unwrap_or(0)
    }
}

/// A real Alertmanager, alone (no cluster peers), routing every alert nowhere.
pub struct Alertmanager(Process);

impl Alertmanager {
    pub async fn start() -> Self {
        let config = "route:\n  receiver: none\nreceivers:\n  - name: none\n";
        let mut p = Process::start("alertmanager", config, |address, dir| {
            vec![
                "--config.file=config.yml".into(),
                format!("--storage.path={}", dir.join("data").display()),
                format!("--web.listen-address={address}"),
                // No gossip listener: alone, on loopback only.
                "--cluster.listen-address=".into(),
                "--log.level=warn".into(),
            ]
        });
        p.ready("Alertmanager to be ready").await;
        Self(p)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.0.address)
    }

    /// Fires an alert with these labels (until resolved).
    pub fn fire(&self, labels: &Value) {
        self.post(labels, None);
    }

    /// Resolves it: the same labels, ended a moment ago.
    pub fn resolve(&self, labels: &Value) {
        let ended = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
        self.post(labels, Some(ended));
    }

    fn post(&self, labels: &Value, ends: Option<jiff::Timestamp>) {
        let mut alert = json!({ "labels": labels });
        if let Some(t) = ends {
            alert["startsAt"] = json!((t - jiff::SignedDuration::from_secs(60)).to_string());
            alert["endsAt"] = json!(t.to_string());
        }
        let body = json!([alert]).to_string();
        let answer = request(&self.0.address, "POST", "/api/v2/alerts", &body);
        assert!(
            answer.as_ref().is_some_and(|(s, _)| *s == 200),
            "post an alert: {answer:?}"
        );
    }

    /// How many active alerts it has.
    pub fn active(&self) -> usize {
        get(&self.0.address, "/api/v2/alerts?active=true")
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0)
    }
}

fn get(address: &str, path: &str) -> Option<(u16, String)> {
    request(address, "GET", path, "")
}

/// One HTTP/1.0 request (so the answer is never chunked): its status and body.
fn request(address: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _one = LOCK.lock().ok();
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}
