//! The embedded demo: a two-service stack whose containers hold nothing but
//! the podstack binary itself, so it runs on a machine that reaches no
//! registry. `web` answers HTTP; `echo`, which depends on it, echoes TCP.
//! Its image is made by its build command (`podstack __demo-image`), which
//! imports a one-file tar of this binary.

use std::path::Path;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The demo's HTTP port on 127.0.0.1.
pub const HTTP_PORT: u16 = 47080;
/// The demo's TCP echo port on 127.0.0.1.
pub const TCP_PORT: u16 = 47081;
/// What the demo's HTTP service answers.
pub const GREETING: &str = "hello from the podstack demo\n";

/// The demo's image name: versioned, so a new podstack makes a new image.
pub fn image() -> String {
    format!("localhost/podstack-demo:{}", env!("CARGO_PKG_VERSION"))
}

/// The demo's stack file, with `exe` as the build command's podstack.
pub fn stack_file(exe: &Path) -> String {
    let quoted = format!("'{}'", exe.display().to_string().replace('\'', "'\\''"));
    let image = image();
    // Every value goes through TOML's own quoting.
    let q = |s: &str| toml_edit::Value::from(s).to_string().trim().to_string();
    let build = q(&format!("{quoted} __demo-image {image}"));
    let image = q(&image);
    format!(
        r#"# The podstack demo: two services made of the podstack binary alone.
[stack]
name = "podstack-demo"

[services.web]
image = {image}
build = {build}
command = ["__serve", "http", "127.0.0.1:{HTTP_PORT}"]
ports = [{HTTP_PORT}]
ready = {{ http = "http://127.0.0.1:{HTTP_PORT}/", status = [200] }}
timeout = "30s"

[services.echo]
image = {image}
command = ["__serve", "tcp", "127.0.0.1:{TCP_PORT}"]
depends_on = ["web"]
ports = [{TCP_PORT}]
ready = {{ tcp = "127.0.0.1:{TCP_PORT}" }}
timeout = "30s"
"#
    )
}

/// Writes the demo's stack file into `dir` (only when it changes) and
/// returns its path.
pub fn write_stack_file(dir: &Path) -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe().context("cannot find the podstack binary")?;
    let path = dir.join(crate::stack::FILE_NAME);
    let text = stack_file(&exe);
    if fs_err::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        crate::fsx::write_atomic(&path, text.as_bytes(), 0o644)?;
    }
    Ok(path)
}

/// A tar archive holding one executable file `name` (pure).
pub fn tar_of(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], v: u64| {
        let s = format!("{v:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(s.as_bytes());
    };
    octal(&mut header[100..108], 0o755);
    octal(&mut header[108..116], 0);
    octal(&mut header[116..124], 0);
    octal(&mut header[124..136], bytes.len() as u64);
    octal(&mut header[136..148], 0);
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u64 = header.iter().map(|b| u64::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(s.as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(bytes);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// `podstack __demo-image IMAGE`: imports this binary as `IMAGE`, with
/// `/podstack` as its entrypoint, into the engine `up` names in
/// `PODSTACK_ENGINE` (podman when unset).
pub async fn make_image(image: &str) -> Result<()> {
    let engine = match std::env::var("PODSTACK_ENGINE").as_deref() {
        Ok("docker") => crate::engine::Engine::Docker,
        _ => crate::engine::Engine::Podman,
    };
    let client = crate::stack::client::Client {
        engine,
        path: which::which(engine.to_string())
            .with_context(|| format!("{engine} is not on PATH"))?,
        env: Vec::new(),
    };
    make_image_in(&client, image).await
}

/// Imports this binary as `image` into `client`'s engine.
pub async fn make_image_in(client: &crate::stack::client::Client, image: &str) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the podstack binary")?;
    let bytes = fs_err::read(&exe)?;
    if !crate::canary::is_static_elf(&bytes) {
        bail!(
            "{} is not statically linked, so it cannot be a whole image",
            exe.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("podstack-demo-")
        .tempdir()?;
    let tar = dir.path().join("podstack.tar");
    fs_err::write(&tar, tar_of("podstack", &bytes))?;
    client
        .import(&tar, image, &["ENTRYPOINT [\"/podstack\"]"])
        .await
}

/// `podstack __serve http|tcp ADDR`: the demo's services.
pub async fn serve(kind: &str, addr: &str) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    loop {
        let (mut s, _) = listener.accept().await?;
        let http = kind == "http";
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            if http {
                let _ = s.read(&mut buf).await;
                let body = GREETING;
                let resp = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            } else {
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_stack_file_is_valid() {
        let text = stack_file(Path::new("/usr/local/bin/pod'stack"));
        let f = crate::stack::file::parse(Path::new("demo.toml"), &text).unwrap();
        assert_eq!(f.services.len(), 2);
        assert!(
            f.services[0]
                .build
                .as_deref()
                .unwrap()
                .contains("'/usr/local/bin/pod'\\''stack' __demo-image")
        );
    }

    #[test]
    fn the_tar_is_read_by_tar() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("x.tar");
        fs_err::write(&t, tar_of("podstack", b"#!/bin/sh\necho hi\n")).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&t)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            listing.contains("-rwxr-xr-x") && listing.contains("podstack"),
            "{listing}"
        );
    }
}
