//! A real IdP for the tests: pysaml2 (`tests/idp/idp.py`) on loopback.
//!
//! `LEADMAPS_SAML_PYTHON` names a Python with the packages of `tests/idp/requirements.txt`.
//! Unset, the tests print a notice and pass without running; with `LEADMAPS_REQUIRE_SAML=1` (CI)
//! that is a failure instead.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use leadmaps_core::tenancy::WorkspaceId;
use leadmaps_saml::{IdpMetadata, SamlSp, SpEntity};
use url::Url;

/// The SP base URL: loopback, never connected to (the test posts the form to `consume`).
pub const SP_BASE: &str = "http://127.0.0.1:9/leadmaps";

/// The running IdP and the SP that trusts it (one workspace for the whole test binary).
pub struct Fixture {
    /// The IdP's base URL, `http://127.0.0.1:PORT`.
    pub idp_base: String,
    /// The SP of the test workspace, trusting the IdP's metadata.
    pub sp: SamlSp,
    _child: Mutex<Child>,
    // Held open: the IdP exits when its standard input closes, that is, with this process.
    _stdin: Mutex<ChildStdin>,
    _dir: tempfile::TempDir,
}

/// The fixture, started once; `None` (after a notice) when the IdP is not configured and not
/// required.
pub fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let required = std::env::var("LEADMAPS_REQUIRE_SAML").is_ok_and(|v| v == "1");
            match std::env::var_os("LEADMAPS_SAML_PYTHON") {
                Some(python) => Some(Fixture::start(PathBuf::from(python))),
                None if required => panic!(
                    "LEADMAPS_REQUIRE_SAML=1 but LEADMAPS_SAML_PYTHON is not set: the SAML tests \
                     need a Python with pysaml2 (see leadmaps-adapters/leadmaps-saml/README.md)"
                ),
                None => {
                    eprintln!(
                        "SKIPPED: the SAML IdP tests need LEADMAPS_SAML_PYTHON (a Python with \
                         pysaml2, see leadmaps-adapters/leadmaps-saml/README.md)"
                    );
                    None
                }
            }
        })
        .as_ref()
}

impl Fixture {
    fn start(python: PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = Url::parse(SP_BASE).unwrap();
        let entity = SpEntity::new(&base, WorkspaceId::new()).expect("SP entity");
        let sp_metadata = dir.path().join("sp.xml");
        std::fs::write(&sp_metadata, entity.metadata_xml().expect("SP metadata")).unwrap();

        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp/idp.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg("--sp-metadata")
            .arg(&sp_metadata)
            .arg("--workdir")
            .arg(dir.path())
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the IdP with {}: {e}", python.display()));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();

        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the IdP did not start within 120 s");
        let idp_base = line
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("the IdP did not start (said {line:?}); see its stderr"))
            .trim()
            .to_owned();

        let (status, metadata) = http("GET", &format!("{idp_base}/metadata"), None);
        assert_eq!(status, 200, "IdP metadata: {metadata}");
        let idp = IdpMetadata::from_xml(&metadata).expect("the IdP's metadata parses");
        Fixture {
            idp_base,
            sp: SamlSp::new(entity, idp),
            _child: Mutex::new(child),
            _stdin: Mutex::new(stdin),
            _dir: dir,
        }
    }

    /// A response from the IdP's `/forge` endpoint, as the base64 `SAMLResponse` form value.
    /// `spec` overrides the defaults: everything right for this SP, InResponseTo `None`, only
    /// the assertion signed, by the IdP's key.
    pub fn forge(&self, spec: serde_json::Value) -> String {
        let mut body = serde_json::json!({
            "destination": self.sp.sp().acs_url(),
            "audience": self.sp.sp().entity_id(),
            "in_response_to": null,
            "sign_response": false,
            "sign_assertion": true,
            "key": "idp",
        });
        for (key, value) in spec.as_object().expect("spec is an object") {
            body[key] = value.clone();
        }
        let (status, reply) = http(
            "POST",
            &format!("{}/forge", self.idp_base),
            Some(&body.to_string()),
        );
        assert_eq!(status, 200, "forge: {reply}");
        let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
        reply["response"].as_str().unwrap().to_owned()
    }
}

/// One HTTP/1.1 request to a loopback server; returns status and body.
pub fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let url = Url::parse(url).unwrap();
    assert!(
        url.host_str() == Some("127.0.0.1"),
        "the tests talk to loopback only"
    );
    let mut stream = TcpStream::connect(("127.0.0.1", url.port_or_known_default().expect("port")))
        .expect("connect to the IdP");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("HTTP reply");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

/// The value of the attribute `name` in the first `<input>`/`<form>` tag that carries
/// `marker`, HTML-unescaped.
pub fn form_value(html: &str, marker: &str, name: &str) -> String {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {html}"));
    let start = html[..at].rfind('<').unwrap();
    let end = at + html[at..].find('>').unwrap();
    let tag = &html[start..end];
    let key = format!("{name}=\"");
    let from = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    let to = from + tag[from..].find('"').unwrap();
    tag[from..to]
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x2B;", "+")
        .replace("&#43;", "+")
        .replace("&#x3D;", "=")
        .replace("&#61;", "=")
}

/// Base64 form value to XML text.
pub fn decode(saml_response: &str) -> String {
    String::from_utf8(STANDARD.decode(saml_response).unwrap()).unwrap()
}

/// XML text to a base64 form value.
pub fn encode(xml: &str) -> String {
    STANDARD.encode(xml)
}

/// The prefix the document declares for `namespace` (pysaml2 writes `ns0`, `ns1`, ...).
pub fn prefix(xml: &str, namespace: &str) -> String {
    let needle = format!("=\"{namespace}\"");
    let at = xml
        .find(&needle)
        .unwrap_or_else(|| panic!("{namespace} not declared"));
    let start = xml[..at].rfind("xmlns:").expect("prefixed declaration") + "xmlns:".len();
    xml[start..at].to_owned()
}

/// The byte range of the first element `<{qname} ...>...</{qname}>` (not self-closing).
pub fn element(xml: &str, qname: &str) -> std::ops::Range<usize> {
    let open = format!("<{qname} ");
    let close = format!("</{qname}>");
    let start = xml.find(&open).unwrap_or_else(|| panic!("no <{qname}>"));
    let end = start + xml[start..].find(&close).expect("closing tag") + close.len();
    start..end
}
