//! A webhook receiver on loopback for notification tests: it keeps every JSON body it
//! took, and answers the first `refuse` requests 503 so retries can be seen.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Receiver {
    pub url: String,
    taken: Arc<Mutex<Vec<Value>>>,
    requests: Arc<Mutex<usize>>,
}

impl Receiver {
    pub fn start(refuse: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!(
            "http://{}/hooks/kordon",
            listener.local_addr().expect("local address")
        );
        let taken: Arc<Mutex<Vec<Value>>> = Arc::default();
        let requests: Arc<Mutex<usize>> = Arc::default();
        let (kept, counted) = (taken.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let Some(body) = read_body(&mut stream) else {
                    continue;
                };
                let n = {
                    let mut c = counted.lock().expect("count");
                    *c += 1;
                    *c
                };
                let status = if n <= refuse {
                    "503 Service Unavailable"
                } else {
                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                        kept.lock().expect("kept").push(v);
                    }
                    "200 OK"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Self {
            url,
            taken,
            requests,
        }
    }

    /// Every notification taken, in order.
    pub fn taken(&self) -> Vec<Value> {
        self.taken.lock().expect("taken").clone()
    }

    /// Every request, refused ones included.
    pub fn requests(&self) -> usize {
        *self.requests.lock().expect("requests")
    }

    /// Waits (up to `limit`) until a notification `wanted` accepts was taken.
    pub async fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            if let Some(v) = self.taken().into_iter().find(|v| wanted(v)) {
                return v;
            }
            assert!(
                started.elapsed() < limit,
                "the webhook never heard {what}; it took {:#?}",
                self.taken()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The body of one POST (by its content-length), or `None` for anything else.
fn read_body(stream: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("POST ") {
        return None;
    }
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}
