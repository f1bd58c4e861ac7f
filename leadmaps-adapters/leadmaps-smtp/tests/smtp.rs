//! `SmtpMailer` against a real SMTP server on loopback: Python's `aiosmtpd`, started per test as
//! a child process that parses each message it accepts with Python's `email` package and stores
//! it as JSON. Without Python and aiosmtpd those tests print `SKIPPED:` and pass, unless
//! `LEADMAPS_REQUIRE_SMTP=1`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use leadmaps_core::ErrorKind;
use leadmaps_core::clock::ManualClock;
use leadmaps_core::mail::{Address, Email, Mailer};
use leadmaps_smtp::{Security, SmtpConfig, SmtpMailer, message_id_for_key};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The server: accepts everything except recipients whose local part starts with `reject`
/// (550) or `later` (451), and writes `NNNN.json` per message into its folder.
const SERVER: &str = r#"
import argparse, asyncio, email, email.policy, json, os, ssl, sys
from aiosmtpd.smtp import SMTP, AuthResult

p = argparse.ArgumentParser()
p.add_argument("dir")
p.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
p.add_argument("--cert")
p.add_argument("--key")
p.add_argument("--auth")
a = p.parse_args()

class Handler:
    def __init__(self):
        self.n = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local.startswith("reject"):
            return f"550 5.1.1 <{address}>: no such user"
        if local.startswith("later"):
            return f"451 4.3.0 <{address}>: try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.n += 1
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        ssl_object = server.transport.get_extra_info("ssl_object")
        auth = session.auth_data
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": ssl_object.version() if ssl_object is not None else None,
            "login": auth.login.decode() if auth is not None else None,
            "headers": [[k, str(v)] for k, v in msg.items()],
            "content_type": msg.get_content_type(),
            "charset": msg.get_content_charset(),
            "body": msg.get_content(),
            "raw": raw.decode("ascii", "replace"),
        }
        path = os.path.join(a.dir, f"{self.n:04}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.replace(path + ".tmp", path)
        return "250 2.0.0 Accepted"

def authenticator(server, session, envelope, mechanism, auth_data):
    user, password = a.auth.split(":", 1)
    ok = auth_data.login == user.encode() and auth_data.password == password.encode()
    return AuthResult(success=ok, handled=False, auth_data=auth_data)

async def main():
    context = None
    if a.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(a.cert, a.key)
    handler = Handler()
    def factory():
        return SMTP(
            handler,
            hostname="localhost",
            enable_SMTPUTF8=True,
            tls_context=context if a.tls == "starttls" else None,
            require_starttls=a.tls == "starttls",
            authenticator=authenticator if a.auth else None,
            auth_required=bool(a.auth),
            auth_require_tls=False,
        )
    server = await asyncio.get_running_loop().create_server(
        factory, "127.0.0.1", 0, ssl=context if a.tls == "implicit" else None
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"#;

/// The interpreter that runs the server: `LEADMAPS_SMTP_PYTHON` if set, else the first of
/// `python3` and `/usr/bin/python3` that can import aiosmtpd (Debian's `python3-aiosmtpd`
/// installs for `/usr/bin/python3`, which a pyenv `python3` earlier on PATH does not see).
fn python() -> Option<&'static str> {
    static PYTHON: OnceLock<Option<String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let candidates = match std::env::var("LEADMAPS_SMTP_PYTHON") {
                Ok(python) => vec![python],
                Err(_) => vec!["python3".to_owned(), "/usr/bin/python3".to_owned()],
            };
            candidates.into_iter().find(|python| {
                Command::new(python)
                    .args(["-c", "import aiosmtpd"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success())
            })
        })
        .as_deref()
}

/// One aiosmtpd process and the folder it writes messages to; killed on drop.
struct Smtpd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Smtpd {
    /// Starts a server with extra `args`, or returns `None` after printing why the test is
    /// skipped. With `LEADMAPS_REQUIRE_SMTP=1` a missing aiosmtpd fails the test instead.
    fn start(args: &[&str]) -> Option<Self> {
        let Some(python) = python() else {
            if std::env::var("LEADMAPS_REQUIRE_SMTP").is_ok_and(|v| v == "1") {
                panic!(
                    "LEADMAPS_REQUIRE_SMTP=1 but no Python can import aiosmtpd \
                     (apt-get install -y python3-aiosmtpd, or pip install aiosmtpd)"
                );
            }
            // Written to the stderr handle itself: the harness captures eprintln! output of
            // passing tests, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED: no Python with aiosmtpd (python3-aiosmtpd); the SMTP mailer was NOT \
                 tested against a server. Set LEADMAPS_REQUIRE_SMTP=1 to fail instead."
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("smtpd.py");
        std::fs::write(&script, SERVER).expect("write server script");
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail).expect("mail dir");
        let log = std::fs::File::create(dir.path().join("smtpd.log")).expect("log");
        let mut child = Command::new(python)
            .arg(&script)
            .arg(&mail)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start aiosmtpd");
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let port = match read.ok().and_then(|_| line.trim().parse::<u16>().ok()) {
            Some(port) => port,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.path().join("smtpd.log")).unwrap_or_default();
                panic!("aiosmtpd did not start:\n{log}");
            }
        };
        Some(Self { child, port, dir })
    }

    fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// Every stored message, in arrival order.
    fn messages(&self) -> Vec<Value> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.mail_dir())
            .expect("mail dir")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|path| serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap())
            .collect()
    }

    fn only_message(&self) -> Value {
        let mut messages = self.messages();
        assert_eq!(messages.len(), 1, "exactly one message stored");
        messages.remove(0)
    }

    /// A configuration for this server.
    fn config(&self, security: Security) -> SmtpConfig {
        SmtpConfig::new("127.0.0.1", security, from())
            .with_port(self.port)
            .with_timeout(Duration::from_secs(10))
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

macro_rules! smtpd_or_skip {
    ($($arg:expr),* $(,)?) => {
        match Smtpd::start(&[$($arg),*]) {
            Some(server) => server,
            None => return,
        }
    };
}

/// The decoded body with the wire's CRLF as LF and no trailing line break (SMTP ends the data
/// with one of its own).
fn body(message: &Value) -> String {
    let body = message["body"]
        .as_str()
        .expect("text body")
        .replace("\r\n", "\n");
    body.trim_end_matches('\n').to_owned()
}

/// The value of the first header called `name` (case-insensitive).
fn header<'a>(message: &'a Value, name: &str) -> Option<&'a str> {
    message["headers"]
        .as_array()?
        .iter()
        .find(|pair| {
            pair[0]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .and_then(|pair| pair[1].as_str())
}

fn from() -> Address {
    Address::parse("noreply@leadmaps.example").unwrap()
}

fn email(to: &str, subject: &str, text: &str) -> Email {
    Email {
        to: Address::parse(to).unwrap(),
        subject: subject.to_owned(),
        text: text.to_owned(),
        idempotency_key: None,
    }
}

/// The application's choice; installing twice is harmless.
fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A private CA and a certificate it signed for `localhost` and 127.0.0.1, written as PEM files
/// into `dir`. Returns the CA certificate (PEM) and the paths of the server's chain and key.
fn private_ca(dir: &Path) -> (String, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "leadmaps-smtp test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca.pem(), cert_path, key_path)
}

fn assert_no_leak(error: &leadmaps_core::Error, secrets: &[&str]) {
    let mut shown = format!("{error} {error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        shown.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    for secret in secrets {
        assert!(!shown.contains(secret), "{secret:?} leaked in {shown}");
    }
}

#[tokio::test]
async fn delivers_plain_text_with_all_headers() {
    let server = smtpd_or_skip!();
    let clock = Arc::new(ManualClock::new(
        time::macros::datetime!(2026-03-01 12:34:56 UTC),
    ));
    let mailer = SmtpMailer::new(
        server
            .config(Security::Plaintext)
            .with_from_name("Leadmaps"),
    )
    .unwrap()
    .with_clock(clock);
    let text = "Hello Alice,\n\n.a line starting with a dot\nOpen https://app.example.com/l/abc\n";
    mailer
        .send(&email("alice@example.org", "Your sign-in link", text))
        .await
        .unwrap();

    let message = server.only_message();
    assert_eq!(message["mail_from"], "noreply@leadmaps.example");
    assert_eq!(
        message["rcpt_tos"],
        serde_json::json!(["alice@example.org"])
    );
    assert_eq!(message["tls"], Value::Null);
    assert_eq!(
        header(&message, "From"),
        Some("Leadmaps <noreply@leadmaps.example>")
    );
    assert_eq!(header(&message, "To"), Some("alice@example.org"));
    assert_eq!(header(&message, "Subject"), Some("Your sign-in link"));
    assert_eq!(
        header(&message, "Date"),
        Some("Sun, 01 Mar 2026 12:34:56 +0000")
    );
    let id = header(&message, "Message-ID").unwrap();
    assert!(
        id.starts_with('<') && id.ends_with("@leadmaps.example>"),
        "{id}"
    );
    assert_eq!(header(&message, "MIME-Version"), Some("1.0"));
    assert_eq!(message["content_type"], "text/plain");
    assert_eq!(message["charset"], "utf-8");
    assert_eq!(
        body(&message),
        text.trim_end(),
        "body, dot line and line breaks intact"
    );
    for absent in ["Bcc", "Cc", "Reply-To", "Sender"] {
        assert_eq!(header(&message, absent), None, "{absent}");
    }
}

#[tokio::test]
async fn utf8_subject_and_body_round_trip() {
    let server = smtpd_or_skip!();
    let mailer = SmtpMailer::new(
        server
            .config(Security::Plaintext)
            .with_from_name("Léadmaps ✉"),
    )
    .unwrap();
    let subject = "Grüße – ваш вход ✓ 🔐 and a rather long subject that needs folding over lines";
    let text = "Привет, Zoë!\nLe lien expire dans 15 minutes. ✓\n";
    mailer
        .send(&email("zoe@example.org", subject, text))
        .await
        .unwrap();

    let message = server.only_message();
    assert_eq!(header(&message, "Subject"), Some(subject));
    assert_eq!(
        header(&message, "From"),
        Some("Léadmaps ✉ <noreply@leadmaps.example>")
    );
    assert_eq!(body(&message), text.trim_end());
    assert_eq!(message["charset"], "utf-8");
    let raw = message["raw"].as_str().unwrap();
    assert!(
        raw.is_ascii(),
        "headers and body are encoded for 7-bit transport"
    );
    assert!(raw.contains("=?utf-8?"), "RFC 2047 encoded words: {raw}");
}

#[tokio::test]
async fn idempotency_key_gives_a_stable_message_id() {
    let server = smtpd_or_skip!();
    let mailer = SmtpMailer::new(server.config(Security::Plaintext)).unwrap();
    let mut keyed = email("bob@example.org", "Breach notice", "details");
    keyed.idempotency_key = Some("breach:2026-03:workspace-7".to_owned());
    mailer.send(&keyed).await.unwrap();
    mailer.send(&keyed).await.unwrap();
    let mut other = keyed.clone();
    other.idempotency_key = Some("breach:2026-03:workspace-8".to_owned());
    mailer.send(&other).await.unwrap();
    let plain = email("bob@example.org", "Hello", "no key");
    mailer.send(&plain).await.unwrap();
    mailer.send(&plain).await.unwrap();

    let ids: Vec<String> = server
        .messages()
        .iter()
        .map(|m| header(m, "Message-ID").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 5, "SMTP itself does not deduplicate");
    let digest = Sha256::digest(b"breach:2026-03:workspace-7");
    let expected = format!("<{}@leadmaps.example>", &hex::encode(digest)[..32]);
    assert_eq!(ids[0], expected);
    assert_eq!(ids[1], expected, "a resend carries the same id");
    assert_eq!(
        message_id_for_key("breach:2026-03:workspace-7", "leadmaps.example"),
        expected
    );
    assert_eq!(
        ids[2],
        message_id_for_key("breach:2026-03:workspace-8", "leadmaps.example")
    );
    assert_ne!(ids[2], ids[0]);
    assert_ne!(
        ids[3], ids[4],
        "without a key every message gets a fresh id"
    );
    assert!(ids[3].ends_with("@leadmaps.example>") && !ids[3].contains(&ids[0][1..33]));
}

#[tokio::test]
async fn subject_with_cr_or_lf_is_refused_and_nothing_is_sent() {
    let server = smtpd_or_skip!();
    let mailer = SmtpMailer::new(server.config(Security::Plaintext)).unwrap();
    for subject in [
        "Hi\r\nBcc: mallory@evil.example",
        "Hi\nBcc: mallory@evil.example",
        "Hi\rBcc: mallory@evil.example",
        "Hi\r\n\r\nfake body",
    ] {
        let err = mailer
            .send(&email("alice@example.org", subject, "text"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid, "{subject:?}");
        assert_no_leak(&err, &["mallory", "fake body"]);
    }
    assert!(server.messages().is_empty(), "nothing reached the server");

    let err = SmtpMailer::new(
        server
            .config(Security::Plaintext)
            .with_from_name("Leadmaps\r\nBcc: mallory@evil.example"),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
}

#[tokio::test]
async fn permanent_refusal_is_invalid_and_temporary_is_unavailable() {
    let server = smtpd_or_skip!();
    let mailer = SmtpMailer::new(server.config(Security::Plaintext)).unwrap();

    let err = mailer
        .send(&email("reject-me@example.org", "s", "secret body"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(err.to_string().contains("550"), "{err}");
    assert!(!err.is_retryable());
    assert_no_leak(
        &err,
        &["reject-me", "example.org", "no such user", "secret body"],
    );

    let err = mailer
        .send(&email("later-please@example.org", "s", "secret body"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_retryable());
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("451"), "{source}");
    assert_no_leak(
        &err,
        &["later-please", "example.org", "try again", "secret body"],
    );

    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn login_works_and_a_wrong_password_is_invalid_without_echo() {
    let server = smtpd_or_skip!("--auth", "mailer:correct horse");
    let config = server.config(Security::Plaintext);

    let mailer =
        SmtpMailer::new(config.clone().with_credentials("mailer", "correct horse")).unwrap();
    mailer
        .send(&email("alice@example.org", "s", "authenticated"))
        .await
        .unwrap();
    assert_eq!(server.only_message()["login"], "mailer");

    let mailer =
        SmtpMailer::new(config.clone().with_credentials("mailer", "wrong-hunter2")).unwrap();
    let err = mailer
        .send(&email("alice@example.org", "s", "never sent"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(err.to_string().contains("535"), "{err}");
    assert_no_leak(&err, &["hunter2", "never sent", "alice"]);

    let mailer = SmtpMailer::new(config).unwrap();
    let err = mailer
        .send(&email("alice@example.org", "s", "never sent"))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Invalid,
        "530 authentication required"
    );
    assert_eq!(
        server.messages().len(),
        1,
        "only the authenticated message arrived"
    );
}

#[tokio::test]
async fn starttls_required_with_a_private_root() {
    install_provider();
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(certs.path());
    let server = smtpd_or_skip!(
        "--tls",
        "starttls",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--auth",
        "mailer:s3cret",
    );
    let config = server
        .config(Security::StartTls)
        .with_root_certificate_pem(ca)
        .with_credentials("mailer", "s3cret");
    let mailer = SmtpMailer::new(config).unwrap();
    mailer
        .send(&email("alice@example.org", "over STARTTLS", "encrypted"))
        .await
        .unwrap();
    let message = server.only_message();
    assert!(
        message["tls"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{message}"
    );
    assert_eq!(message["login"], "mailer");
    assert_eq!(body(&message), "encrypted");
}

#[tokio::test]
async fn starttls_required_but_not_offered_sends_nothing() {
    install_provider();
    let server = smtpd_or_skip!("--auth", "mailer:s3cret");
    let config = server
        .config(Security::StartTls)
        .with_root_certificate_pem(private_ca(tempfile::tempdir().unwrap().path()).0)
        .with_credentials("mailer", "s3cret");
    let err = SmtpMailer::new(config)
        .unwrap()
        .send(&email("alice@example.org", "s", "must not leak"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "no downgrade to plaintext");
    assert!(err.to_string().contains("STARTTLS"), "{err}");
    assert_no_leak(&err, &["s3cret", "must not leak"]);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn implicit_tls_with_a_private_root() {
    install_provider();
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(certs.path());
    let server = smtpd_or_skip!(
        "--tls",
        "implicit",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    );
    let mailer = SmtpMailer::new(
        server
            .config(Security::ImplicitTls)
            .with_root_certificate_pem(ca),
    )
    .unwrap();
    mailer
        .send(&email(
            "alice@example.org",
            "over TLS",
            "encrypted from the first byte",
        ))
        .await
        .unwrap();
    let message = server.only_message();
    assert!(
        message["tls"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{message}"
    );
    assert_eq!(body(&message), "encrypted from the first byte");
}

#[tokio::test]
async fn untrusted_certificate_is_unavailable_and_sends_nothing() {
    install_provider();
    let certs = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = private_ca(certs.path());
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = private_ca(other.path());
    let server = smtpd_or_skip!(
        "--tls",
        "implicit",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    );
    let config = server
        .config(Security::ImplicitTls)
        .with_root_certificate_pem(other_ca)
        .with_credentials("mailer", "s3cret");
    let err = SmtpMailer::new(config)
        .unwrap()
        .send(&email("alice@example.org", "s", "must not leak"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("TLS"), "{source}");
    assert_no_leak(&err, &["s3cret", "must not leak"]);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn closed_port_is_unavailable_quickly() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let timeout = Duration::from_secs(3);
    let config = SmtpConfig::new("127.0.0.1", Security::Plaintext, from())
        .with_port(port)
        .with_timeout(timeout);
    let started = Instant::now();
    let err = SmtpMailer::new(config)
        .unwrap()
        .send(&email("alice@example.org", "s", "text"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < timeout, "took {:?}", started.elapsed());
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_retryable());
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("connection"), "{source}");
}

#[tokio::test]
async fn silent_server_times_out_as_unavailable() {
    // Accepts connections and never greets.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let timeout = Duration::from_millis(500);
    let config = SmtpConfig::new("127.0.0.1", Security::Plaintext, from())
        .with_port(port)
        .with_timeout(timeout);
    let started = Instant::now();
    let err = SmtpMailer::new(config)
        .unwrap()
        .send(&email("alice@example.org", "s", "text"))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout && elapsed < Duration::from_secs(3),
        "took {elapsed:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("no answer within"), "{source}");
    holder.abort();
}

#[test]
fn config_debug_hides_the_password() {
    install_provider();
    let config = SmtpConfig::from_url(
        "smtps://apikey-user:hunter2%21@mail.example.com:2465",
        from(),
    )
    .unwrap()
    .with_from_name("Leadmaps");
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("apikey-user"),
        "{shown}"
    );
    assert!(!shown.contains("noreply"), "only the From domain: {shown}");
    assert!(
        shown.contains("mail.example.com") && shown.contains("2465"),
        "{shown}"
    );
    assert!(config.has_credentials());
    let mailer_shown = format!("{:?}", SmtpMailer::new(config).unwrap());
    assert!(
        !mailer_shown.contains("hunter2") && !mailer_shown.contains("apikey"),
        "{mailer_shown}"
    );
}

/// The whole sign-in over real SMTP: the link request goes out through `SmtpMailer`, the
/// message is read back from the server, and the link in it signs in once.
#[tokio::test]
async fn a_sign_in_link_travels_by_smtp_and_signs_in_once() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use leadmaps_axum::auth::{AuthServices, AuthState, auth_routes};
    use leadmaps_core::auth::recovery::RecoveryCodes;
    use leadmaps_core::auth::session::Sessions;
    use leadmaps_core::auth::staff::StepUp;
    use leadmaps_core::auth::tokens::TokenHasher;
    use leadmaps_core::auth::totp::TotpFactors;
    use leadmaps_core::auth::users::{User, UserStore};
    use leadmaps_core::clock::{Clock, SystemClock};
    use leadmaps_core::crypto::{Kek, KeyRing, Vault};
    use leadmaps_core::memory::MemoryStore;
    use leadmaps_core::tenancy::{Gate, UserId};
    use tower::ServiceExt as _;

    let server = smtpd_or_skip!();
    let store = Arc::new(MemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ring =
        KeyRing::new([Kek::new(1, &(0..32u8).map(|i| i ^ 0x33).collect::<Vec<_>>()).unwrap()])
            .unwrap();
    let hasher = TokenHasher::new(&ring);
    let vault = Arc::new(
        Vault::start(ring, store.clone(), clock.clone())
            .await
            .unwrap(),
    );
    store
        .create_user(&User {
            id: UserId::new(),
            email: Address::parse("erin@example.org").unwrap(),
            created_at: clock.now(),
        })
        .await
        .unwrap();
    let mailer = Arc::new(SmtpMailer::new(server.config(Security::Plaintext)).unwrap());
    let state = AuthState::new(
        AuthServices {
            identities: store.clone(),
            sessions: Arc::new(Sessions::new(store.clone(), hasher, clock.clone())),
            totp: Arc::new(TotpFactors::new(
                store.clone(),
                vault,
                Gate::new(clock.clone()),
                clock.clone(),
                "leadmaps",
            )),
            recovery: Arc::new(RecoveryCodes::new(store.clone())),
            step_up: Arc::new(StepUp::new(store.clone(), clock.clone())),
            mailer,
            audit: store.clone(),
            gate: Gate::new(clock.clone()),
            clock,
        },
        "https://app.example",
        vec![],
    );
    let router = auth_routes(Arc::new(state));
    let send = |request: Request<Body>| router.clone().oneshot(request);
    let asked = send(
        Request::post("/auth/magic-link")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"email":"erin@example.org"}"#))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(asked.status(), StatusCode::ACCEPTED);

    let deadline = Instant::now() + Duration::from_secs(20);
    let message = loop {
        if let Some(message) = server.messages().pop() {
            break message;
        }
        assert!(
            Instant::now() < deadline,
            "no sign-in mail reached the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(message["rcpt_tos"], serde_json::json!(["erin@example.org"]));
    assert_eq!(
        header(&message, "Subject"),
        Some("Your leadmaps sign-in link")
    );
    let text = body(&message);
    let link = text
        .split_whitespace()
        .find(|word| word.starts_with("https://app.example/auth/magic-link?token="))
        .expect("a link in the body")
        .to_owned();
    let token = link.split("token=").nth(1).unwrap().to_owned();

    let page = send(
        Request::get(link.trim_start_matches("https://app.example"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        page.status(),
        StatusCode::OK,
        "the link shows a confirmation page"
    );
    let confirm = || {
        Request::post("/auth/magic-link/confirm")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .unwrap()
    };
    let signed_in = send(confirm()).await.unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let cookie = signed_in.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with("__Host-leadmaps_session="), "{cookie}");
    assert_eq!(
        send(confirm()).await.unwrap().status(),
        StatusCode::BAD_REQUEST,
        "the mailed link works once"
    );
}
