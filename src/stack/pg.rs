//! The PostgreSQL probe: just enough of the wire protocol (v3) to log in
//! the way libpq does (trust, cleartext or SCRAM-SHA-256, PostgreSQL's
//! default since 14) and run `SELECT 1`, with libpq's ping semantics. It
//! replaces a full client library (a third of a megabyte of binary) with a
//! few hundred lines, tested against the RFCs' vectors and a real server.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stack::probe::Verdict;

/// The largest message podstack accepts from a server (a probe needs little).
const MAX_MESSAGE: usize = 1 << 20;

/// Logs in as `user` to `database` and runs `SELECT 1`.
pub async fn ping(
    stream: TcpStream,
    addr: SocketAddr,
    user: &str,
    password: Option<&str>,
    database: &str,
) -> Verdict {
    let mut c = Conn { s: stream };
    match login_and_select(&mut c, user, password, database).await {
        Ok(v) => {
            let _ = c.send(b'X', &[]).await;
            v
        }
        Err(e) => Verdict::NotYet(format!("PostgreSQL at {addr}: {e}")),
    }
    .with_addr(addr, user)
}

trait WithAddr {
    fn with_addr(self, addr: SocketAddr, user: &str) -> Verdict;
}

impl WithAddr for Verdict {
    /// Server errors become messages naming the server and the user.
    fn with_addr(self, addr: SocketAddr, user: &str) -> Verdict {
        match self {
            Verdict::Fatal(code) if code == "28P01" => Verdict::Fatal(format!(
                "PostgreSQL at {addr} refuses the password for user {user}: its data volume was probably initialised with another password (remove it with `podstack down --volumes`, or use the password it was made with)"
            )),
            Verdict::Fatal(e) if !e.starts_with("PostgreSQL") => {
                Verdict::Fatal(format!("PostgreSQL at {addr} refuses user {user}: {e}"))
            }
            Verdict::NotYet(e) if e == "57P03" => {
                Verdict::NotYet(format!("PostgreSQL at {addr} is starting up"))
            }
            Verdict::NotYet(e) if !e.starts_with("PostgreSQL") => {
                Verdict::NotYet(format!("PostgreSQL at {addr}: {e}"))
            }
            v => v,
        }
    }
}

struct Conn {
    s: TcpStream,
}

impl Conn {
    async fn send(&mut self, tag: u8, body: &[u8]) -> std::io::Result<()> {
        let mut msg = Vec::with_capacity(body.len() + 5);
        msg.push(tag);
        msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        msg.extend_from_slice(body);
        self.s.write_all(&msg).await
    }

    async fn recv(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut head = [0u8; 5];
        self.s
            .read_exact(&mut head)
            .await
            .map_err(|e| format!("the connection ended: {e}"))?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(4..=MAX_MESSAGE).contains(&len) {
            return Err("not a PostgreSQL answer".into());
        }
        let mut body = vec![0u8; len - 4];
        self.s
            .read_exact(&mut body)
            .await
            .map_err(|e| format!("the connection ended: {e}"))?;
        Ok((head[0], body))
    }
}

/// The StartupMessage (protocol 3.0) for `user` and `database`.
fn startup_message(user: &str, database: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes());
    for (k, v) in [("user", user), ("database", database)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// The startup message alone, the warm path's probe: any authentication
/// request means a server is accepting connections; `57P03` means it is
/// still starting; any other error still comes from a server that answers.
pub async fn startup(stream: TcpStream, addr: SocketAddr, user: &str, database: &str) -> Verdict {
    let mut c = Conn { s: stream };
    if let Err(e) = c.s.write_all(&startup_message(user, database)).await {
        return Verdict::NotYet(format!("PostgreSQL at {addr}: {e}"));
    }
    match c.recv().await {
        Ok((b'R', _)) => Verdict::Ready,
        Ok((b'E', body)) if error_fields(&body).0 == "57P03" => {
            Verdict::NotYet(format!("PostgreSQL at {addr} is starting up"))
        }
        Ok((b'E', _)) => Verdict::Ready,
        Ok(_) => Verdict::NotYet(format!("PostgreSQL at {addr}: not a PostgreSQL answer")),
        Err(e) => Verdict::NotYet(format!("PostgreSQL at {addr}: {e}")),
    }
}

/// The outcome of a server error: a SQLSTATE that waiting cannot fix is
/// final, anything else (57P03 starting up, 3D000 while the entrypoint is
/// still creating the database, ...) may pass.
fn error_verdict(body: &[u8]) -> Verdict {
    let (code, message) = error_fields(body);
    match code.as_str() {
        "28P01" => Verdict::Fatal(code),
        "28000" => Verdict::Fatal(message),
        "57P03" => Verdict::NotYet(code),
        _ => Verdict::NotYet(format!("{message} (SQLSTATE {code})")),
    }
}

/// The SQLSTATE (`C`) and message (`M`) fields of an ErrorResponse body.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let mut code = String::new();
    let mut message = String::new();
    for field in body.split(|b| *b == 0) {
        if let Some((&tag, value)) = field.split_first() {
            let value = String::from_utf8_lossy(value).into_owned();
            match tag {
                b'C' => code = value,
                b'M' => message = value,
                _ => {}
            }
        }
    }
    (code, message)
}

async fn login_and_select(
    c: &mut Conn,
    user: &str,
    password: Option<&str>,
    database: &str,
) -> Result<Verdict, String> {
    c.s.write_all(&startup_message(user, database))
        .await
        .map_err(|e| e.to_string())?;

    let mut scram: Option<Scram> = None;
    let mut queried = false;
    loop {
        let (tag, body) = c.recv().await?;
        match tag {
            b'E' => return Ok(error_verdict(&body)),
            b'R' => {
                let code = body
                    .get(..4)
                    .map_or(-1, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                let pw = || {
                    password.ok_or_else(|| {
                        "the server asks for a password and the probe has none".to_string()
                    })
                };
                match code {
                    0 => {}
                    3 => {
                        let mut p = pw()?.as_bytes().to_vec();
                        p.push(0);
                        c.send(b'p', &p).await.map_err(|e| e.to_string())?;
                    }
                    10 => {
                        let mechanisms = String::from_utf8_lossy(&body[4..]);
                        if !mechanisms.split('\0').any(|m| m == "SCRAM-SHA-256") {
                            return Ok(Verdict::Fatal(format!(
                                "the server offers only {mechanisms}, which podstack's probe does not speak"
                            )));
                        }
                        let s = Scram::new(pw()?, &nonce());
                        let first = s.client_first();
                        let mut p = b"SCRAM-SHA-256\0".to_vec();
                        p.extend_from_slice(&(first.len() as u32).to_be_bytes());
                        p.extend_from_slice(first.as_bytes());
                        c.send(b'p', &p).await.map_err(|e| e.to_string())?;
                        scram = Some(s);
                    }
                    11 => {
                        let s = scram.as_mut().ok_or("a SASL answer before SASL began")?;
                        let server_first = String::from_utf8_lossy(&body[4..]).into_owned();
                        let fin = s.client_final(&server_first)?;
                        c.send(b'p', fin.as_bytes())
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    12 => {}
                    5 => {
                        return Ok(Verdict::Fatal(
                            "the server asks for md5 authentication, which podstack's probe does not speak: use scram-sha-256 (PostgreSQL's default), or an exec probe".into(),
                        ));
                    }
                    other => {
                        return Ok(Verdict::Fatal(format!(
                            "the server asks for authentication method {other}, which podstack's probe does not speak"
                        )));
                    }
                }
            }
            b'Z' if !queried => {
                c.send(b'Q', b"SELECT 1\0")
                    .await
                    .map_err(|e| e.to_string())?;
                queried = true;
            }
            b'Z' => return Ok(Verdict::Ready),
            _ => {} // parameter status, key data, notices, rows
        }
    }
}

/// 24 random letters and digits.
fn nonce() -> String {
    crate::stack::random_string(24).unwrap_or_else(|_| {
        // /dev/urandom unreadable: time and pid still make it unique.
        format!(
            "{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        )
    })
}

/// A SCRAM-SHA-256 exchange (RFC 5802, RFC 7677) as PostgreSQL runs it:
/// no channel binding, the user name taken from the startup message.
pub struct Scram {
    password: String,
    client_nonce: String,
    user: String,
}

impl Scram {
    fn new(password: &str, client_nonce: &str) -> Self {
        Self {
            password: password.to_string(),
            client_nonce: client_nonce.to_string(),
            user: String::new(),
        }
    }

    fn first_bare(&self) -> String {
        format!("n={},r={}", self.user, self.client_nonce)
    }

    /// `n,,n=USER,r=NONCE`.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.first_bare())
    }

    /// The final message for the server's first message.
    pub fn client_final(&self, server_first: &str) -> Result<String, String> {
        let attr = |k: &str| {
            server_first
                .split(',')
                .find_map(|a| a.strip_prefix(k))
                .ok_or_else(|| format!("the server's SCRAM message lacks {k}"))
        };
        let nonce = attr("r=")?;
        if !nonce.starts_with(&self.client_nonce) {
            return Err("the server's SCRAM nonce does not extend ours".into());
        }
        let salt = base64_decode(attr("s=")?).ok_or("the server's SCRAM salt is not base64")?;
        let iterations: u32 = attr("i=")?
            .parse()
            .map_err(|_| "the server's SCRAM iteration count is not a number")?;
        if iterations == 0 || iterations > 10_000_000 {
            return Err("the server's SCRAM iteration count is out of range".into());
        }
        let salted = pbkdf2(self.password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let stored_key: [u8; 32] = sha256(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{server_first},{without_proof}", self.first_bare());
        let signature = hmac(&stored_key, &[auth.as_bytes()]);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(a, b)| a ^ b)
            .collect();
        Ok(format!("{without_proof},p={}", base64_encode(&proof)))
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(data));
    out
}

/// HMAC-SHA-256 of the concatenated `data` (RFC 2104).
pub fn hmac(key: &[u8], data: &[&[u8]]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha256(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    for d in data {
        inner.update(d);
    }
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer.finalize());
    out
}

/// PBKDF2-HMAC-SHA-256 with one 32-byte block (RFC 8018), as SCRAM needs.
pub fn pbkdf2(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &[&u]);
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (padding optional); `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = B64.iter().position(|x| *x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn hmac_and_pbkdf2_match_their_rfc_vectors() {
        // RFC 4231, test case 2.
        assert_eq!(
            hex(&hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // PBKDF2-HMAC-SHA256 ("password", "salt"), 1 and 4096 iterations.
        assert_eq!(
            hex(&pbkdf2(b"password", b"salt", 1)),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
        assert_eq!(
            hex(&pbkdf2(b"password", b"salt", 4096)),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn base64_round_trips() {
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert!(base64_decode("not base64!").is_none());
    }

    #[test]
    fn scram_matches_rfc_7677() {
        let mut s = Scram::new("pencil", "rOprNGfwEbeRWgbNEkqO");
        s.user = "user".into();
        assert_eq!(s.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let fin = s
            .client_final("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert_eq!(
            fin,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(s.client_final("r=someone-else,s=AA==,i=1").is_err());
    }

    #[test]
    fn server_errors_are_read() {
        let body =
            b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"postgres\"\0\0";
        assert_eq!(
            error_fields(body),
            (
                "28P01".into(),
                "password authentication failed for user \"postgres\"".into()
            )
        );
        assert_eq!(error_verdict(body), Verdict::Fatal("28P01".into()));
    }
}
