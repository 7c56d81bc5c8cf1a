//! A `redis-server` of the bench's own, and just enough of RESP2 to drive it.
//!
//! The server is Debian's `redis-server`, started on a free loopback port with no
//! durability at all (`--save "" --appendonly no`): the in-memory counter the industry
//! shortcut relies on. The client speaks RESP over a `TcpStream` (one request, one reply;
//! no pipelining), which is all a Lua-scripted `EVALSHA` needs.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};

/// A running `redis-server`; killed on drop.
pub(crate) struct RedisServer {
    pub port: u16,
    child: Child,
    /// Spawn → first `PONG`.
    pub ready_after: Duration,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers `PING`.
    pub async fn start() -> anyhow::Result<Self> {
        let port = super::free_port()?;
        let started = Instant::now();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "yes", "--loglevel", "warning", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    anyhow::anyhow!("redis-server not found: apt-get install redis-server")
                }
                _ => anyhow::anyhow!("cannot start redis-server: {e}"),
            })?;
        let mut server = Self { port, child, ready_after: Duration::ZERO };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = Resp::connect(port).await
                && let Ok(Reply::Status(s)) = c.call(&["PING"]).await
                && s == "PONG"
            {
                server.ready_after = started.elapsed();
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                anyhow::bail!("redis-server exited during start-up ({status}); is port {port} taken?");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis-server did not answer PING on 127.0.0.1:{port} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// One connection.
pub(crate) struct Resp {
    stream: BufReader<TcpStream>,
}

impl Resp {
    pub async fn connect(port: u16) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream: BufReader::new(stream) })
    }

    /// Sends one command and reads its reply; a Redis error reply is an `Err`.
    pub async fn call(&mut self, args: &[&str]) -> anyhow::Result<Reply> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&buf).await?;
        match Box::pin(self.read()).await? {
            Reply::Error(e) => anyhow::bail!("redis: {e}"),
            r => Ok(r),
        }
    }

    async fn read(&mut self) -> anyhow::Result<Reply> {
        let mut line = String::new();
        anyhow::ensure!(self.stream.read_line(&mut line).await? > 0, "redis closed the connection");
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at(1.min(line.len()));
        Ok(match kind {
            "+" => Reply::Status(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(rest.parse().context("bad RESP integer")?),
            "$" => {
                let len: i64 = rest.parse().context("bad RESP bulk length")?;
                if len < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut data = vec![0; len as usize + 2];
                    self.stream.read_exact(&mut data).await?;
                    data.truncate(len as usize);
                    Reply::Bulk(Some(data))
                }
            }
            "*" => {
                let n: i64 = rest.parse().context("bad RESP array length")?;
                let mut items = Vec::new();
                for _ in 0..n.max(0) {
                    items.push(Box::pin(self.read()).await?);
                }
                Reply::Array(items)
            }
            _ => anyhow::bail!("unexpected RESP line {line:?}"),
        })
    }
}
