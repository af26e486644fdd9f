//! A small SMTP server on loopback that records each message it accepts. It speaks enough of
//! RFC 5321 for lettre's client: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT. A recipient
//! whose address starts with `nobody.` is refused with 550, the address quoted in the reply.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct Received {
    pub recipients: Vec<String>,
    pub data: String,
}

pub struct FakeSmtp {
    pub port: u16,
    pub messages: mpsc::UnboundedReceiver<Received>,
}

impl FakeSmtp {
    pub async fn start() -> FakeSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, tx.clone()));
            }
        });
        FakeSmtp { port, messages: rx }
    }
}

async fn session(stream: TcpStream, tx: mpsc::UnboundedSender<Received>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 fake.test ESMTP\r\n").await?;
    let mut recipients = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-fake.test\r\n250 8BITMIME\r\n",
            "HELO" | "MAIL" | "RSET" | "NOOP" => b"250 ok\r\n",
            "RCPT" => {
                let addr = line
                    .split_once(':')
                    .map(|(_, a)| a.trim().trim_matches(['<', '>']))
                    .unwrap_or("")
                    .to_string();
                if addr.starts_with("nobody.") {
                    // As real servers do, the refusal quotes the address back.
                    let reply = format!("550 5.1.1 <{addr}>: Recipient address rejected\r\n");
                    write.write_all(reply.as_bytes()).await?;
                    continue;
                }
                recipients.push(addr);
                b"250 ok\r\n"
            }
            "DATA" => {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut data = String::new();
                while let Some(l) = lines.next_line().await? {
                    if l == "." {
                        break;
                    }
                    data.push_str(&l);
                    data.push('\n');
                }
                let _ = tx.send(Received {
                    recipients: std::mem::take(&mut recipients),
                    data,
                });
                b"250 ok: queued as FAKE1\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
    Ok(())
}
