//! A neuron written by hand over raw TCP, for answers no HTTP library
//! would send: `GET /status` reports model `m` ready (a well-formed,
//! kept-alive answer); `POST /v1/chat/completions` gets the bytes the test
//! gives, as they are. It records which connection carried each request
//! and which connections the gateway closed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use cortex_core::neuron_api::{
    AvailableModel, DeviceKind, DeviceStatus, ModelState, ModelStatus, NodeStatus,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the raw neuron read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The connection it came on (numbered from 0 in accept order).
    pub conn: usize,
    pub path: String,
}

#[derive(Default)]
struct Log {
    requests: Vec<Seen>,
    closed: Vec<usize>,
}

/// A running raw neuron.
pub struct RawNeuron {
    pub name: String,
    pub addr: SocketAddr,
    chat: Arc<Mutex<Vec<u8>>>,
    log: Arc<Mutex<Log>>,
}

fn status(name: &str) -> Vec<u8> {
    let s = NodeStatus {
        name: name.into(),
        version: "raw".into(),
        devices: vec![DeviceStatus {
            index: 0,
            kind: DeviceKind::Cpu,
            name: "cpu".into(),
            memory_total_bytes: 1 << 30,
            memory_free_bytes: 1 << 30,
            memory_budget_bytes: 1 << 30,
            memory_used_bytes: 100,
        }],
        models: vec![ModelStatus {
            kind: Default::default(),
            id: "m".into(),
            state: ModelState::Ready,
            device: 0,
            memory_bytes: 100,
            kv_reserve_bytes: 0,
            loaded_at: 1,
            last_used_at: 1,
            in_flight: 0,
            source: "m.gguf".into(),
            context_length: 4096,
            error: None,
            cached_prefixes: Vec::new(),
        }],
        available: vec![AvailableModel {
            kind: Default::default(),
            id: "m".into(),
            source: "m.gguf".into(),
            size_bytes: 100,
            estimated_bytes: 100,
            context_length: None,
            architecture: None,
        }],
    };
    let body = serde_json::to_vec(&s).unwrap();
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl RawNeuron {
    /// Serve on `127.0.0.1:0`, answering chats with `chat` (raw bytes).
    pub async fn start(name: &str, chat: &[u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let chat = Arc::new(Mutex::new(chat.to_vec()));
        let log = Arc::new(Mutex::new(Log::default()));
        let status = status(name);
        let (c2, l2) = (chat.clone(), log.clone());
        tokio::spawn(async move {
            for conn in 0usize.. {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let (chat, log, status) = (c2.clone(), l2.clone(), status.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    loop {
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match s.read(&mut tmp).await {
                                Ok(0) | Err(_) => {
                                    log.lock().unwrap().closed.push(conn);
                                    return;
                                }
                                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let path = head.split(' ').nth(1).unwrap_or("").to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < end + len {
                            match s.read(&mut tmp).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                            }
                        }
                        buf.drain(..end + len);
                        let answer = if path == "/status" {
                            status.clone()
                        } else {
                            chat.lock().unwrap().clone()
                        };
                        log.lock().unwrap().requests.push(Seen { conn, path });
                        if s.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            name: name.to_string(),
            addr,
            chat,
            log,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer chats with `bytes` from now on.
    pub fn answer_chats_with(&self, bytes: &[u8]) {
        *self.chat.lock().unwrap() = bytes.to_vec();
    }

    /// The chat requests seen, in order.
    pub fn chats(&self) -> Vec<Seen> {
        let log = self.log.lock().unwrap();
        log.requests
            .iter()
            .filter(|r| r.path != "/status")
            .cloned()
            .collect()
    }

    /// Every request that came on connection `conn`.
    pub fn on_conn(&self, conn: usize) -> Vec<Seen> {
        let log = self.log.lock().unwrap();
        log.requests
            .iter()
            .filter(|r| r.conn == conn)
            .cloned()
            .collect()
    }

    /// Connections the gateway closed.
    pub fn closed(&self) -> Vec<usize> {
        self.log.lock().unwrap().closed.clone()
    }
}
