//! Servers for the network tests of `bundle build`, all on 127.0.0.1.
//!
//! The file server supports range requests and can drop a connection part-way. The CONNECT
//! proxy records where it tunnels. The token server signs registry tokens with a key made by
//! openssl, which also makes the TLS certificates. The registry is Docker distribution
//! (`/usr/bin/docker-registry`), started with a config file of its own.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::fixtures::tool_ok;

/// Returns a port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP request as a test server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// Reads a request head from `stream`; `None` when the client closed the connection.
fn read_request(stream: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if stream.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        stream.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    Some(Request {
        method,
        path,
        headers,
    })
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// Starts a thread that accepts connections on a new 127.0.0.1 listener and hands each one to
/// `handle` on a thread of its own. Returns the port.
fn serve(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = Arc::new(handle);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handle = handle.clone();
            thread::spawn(move || handle(stream));
        }
    });
    port
}

#[derive(Default)]
struct FileServerState {
    files: HashMap<String, Vec<u8>>,
    /// Paths whose next responses send only the first bytes of the body, then close: (bytes,
    /// how many responses).
    drops: HashMap<String, (usize, usize)>,
    requests: Vec<Request>,
}

/// An HTTP/1.1 file server with range requests.
#[derive(Clone)]
pub struct FileServer {
    port: u16,
    state: Arc<Mutex<FileServerState>>,
}

impl FileServer {
    pub fn start() -> FileServer {
        let state = Arc::new(Mutex::new(FileServerState::default()));
        let shared = state.clone();
        let port = serve(move |stream| handle_file_request(stream, &shared));
        FileServer { port, state }
    }

    /// `127.0.0.1:PORT`, as `plainHttp` lists it.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn put(&self, path: &str, content: impl Into<Vec<u8>>) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.to_string(), content.into());
    }

    /// Makes the next `times` responses for `path` stop after `bytes` bytes of the body.
    pub fn drop_after(&self, path: &str, bytes: usize, times: usize) {
        self.state
            .lock()
            .unwrap()
            .drops
            .insert(path.to_string(), (bytes, times));
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|request| request.path == path)
            .collect()
    }
}

fn handle_file_request(stream: TcpStream, state: &Mutex<FileServerState>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some(request) = read_request(&mut reader) else {
        return;
    };
    let mut stream = stream;
    let (content, cut) = {
        let mut state = state.lock().unwrap();
        state.requests.push(request.clone());
        let content = state.files.get(&request.path).cloned();
        let cut = match state.drops.get_mut(&request.path) {
            Some((bytes, times)) if *times > 0 => {
                *times -= 1;
                Some(*bytes)
            }
            _ => None,
        };
        (content, cut)
    };
    let Some(content) = content else {
        respond(&mut stream, "404 Not Found", &[], b"not found\n");
        return;
    };
    let start = request
        .header("range")
        .and_then(|range| range.strip_prefix("bytes="))
        .and_then(|range| range.split('-').next())
        .and_then(|start| start.parse::<usize>().ok());
    let (status, body, mut headers) = match start {
        Some(start) if start < content.len() => (
            "206 Partial Content",
            &content[start..],
            vec![(
                "Content-Range",
                format!("bytes {start}-{}/{}", content.len() - 1, content.len()),
            )],
        ),
        Some(_) => {
            respond(&mut stream, "416 Range Not Satisfiable", &[], b"");
            return;
        }
        None => ("200 OK", &content[..], Vec::new()),
    };
    headers.push(("Accept-Ranges", "bytes".to_string()));
    match cut {
        Some(bytes) => {
            // The head promises the whole body; the connection closes after part of it.
            let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
            for (name, value) in &headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body[..bytes.min(body.len())]);
            let _ = stream.flush();
            let _ = stream.shutdown(Shutdown::Both);
        }
        None => respond(&mut stream, status, &headers, body),
    }
}

/// An HTTP proxy that only tunnels (`CONNECT`), as HTTPS proxies do, and records the targets.
pub struct ConnectProxy {
    pub port: u16,
    targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        let targets = Arc::new(Mutex::new(Vec::new()));
        let shared = targets.clone();
        let port = serve(move |stream| {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let Some(request) = read_request(&mut reader) else {
                return;
            };
            let mut client = stream;
            if request.method != "CONNECT"
                || !request.path.starts_with("127.0.0.1:")
                    && !request.path.starts_with("localhost:")
            {
                respond(
                    &mut client,
                    "403 Forbidden",
                    &[],
                    b"only CONNECT to loopback\n",
                );
                return;
            }
            shared.lock().unwrap().push(request.path.clone());
            let target = request.path.replace("localhost:", "127.0.0.1:");
            let Ok(upstream) = TcpStream::connect(&target) else {
                respond(&mut client, "502 Bad Gateway", &[], b"");
                return;
            };
            let _ = client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n");
            let (mut client_read, mut upstream_write) =
                (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            let forward = thread::spawn(move || {
                let _ = std::io::copy(&mut client_read, &mut upstream_write);
                let _ = upstream_write.shutdown(Shutdown::Write);
            });
            let (mut upstream_read, mut client_write) = (upstream, client);
            let _ = std::io::copy(&mut upstream_read, &mut client_write);
            let _ = client_write.shutdown(Shutdown::Write);
            let _ = forward.join();
        });
        ConnectProxy { port, targets }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost, made with openssl.
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// A directory with the CA as `ca.crt`, the form skopeo's `--dest-cert-dir` reads.
    pub cert_dir: PathBuf,
}

impl Tls {
    pub fn generate(dir: &Path) -> Tls {
        fs::create_dir_all(dir).unwrap();
        let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca_args = vec!["req", "-x509"];
        ca_args.extend(ec);
        let (ca_key, ca, key, csr, cert, ext) = (
            path("ca.key"),
            path("ca.pem"),
            path("server.key"),
            path("server.csr"),
            path("server.pem"),
            path("server.ext"),
        );
        ca_args.extend([
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-days",
            "2",
            "-subj",
            "/CN=airlock test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        tool_ok("openssl", &ca_args, None);
        let mut csr_args = vec!["req"];
        csr_args.extend(ec);
        csr_args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
        tool_ok("openssl", &csr_args, None);
        fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        tool_ok(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
            None,
        );
        let cert_dir = dir.join("certs.d");
        fs::create_dir_all(&cert_dir).unwrap();
        fs::copy(&ca, cert_dir.join("ca.crt")).unwrap();
        Tls {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
            cert_dir,
        }
    }
}

/// A bearer token server for the registry's `token` authentication: it grants every requested
/// action to `user` with `password`, and anonymous pulls of repositories under `public/`.
pub struct TokenServer {
    pub port: u16,
    /// The certificate whose key signs the tokens; the registry trusts it.
    pub certificate: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
}

pub const TOKEN_ISSUER: &str = "airlock-test-issuer";
pub const TOKEN_SERVICE: &str = "airlock-test-registry";

impl TokenServer {
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        fs::create_dir_all(dir).unwrap();
        let key = dir.join("token.key");
        let certificate = dir.join("token.pem");
        tool_ok(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                certificate.to_str().unwrap(),
                "-days",
                "2",
                "-subj",
                "/CN=airlock test token issuer",
            ],
            None,
        );
        let der = Command::new("openssl")
            .args([
                "x509",
                "-in",
                certificate.to_str().unwrap(),
                "-outform",
                "DER",
            ])
            .output()
            .unwrap()
            .stdout;
        let x5c = data_encoding::BASE64.encode(&der);
        let expected_basic = format!(
            "Basic {}",
            data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes())
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shared = requests.clone();
        let port = serve(move |stream| {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let Some(request) = read_request(&mut reader) else {
                return;
            };
            shared.lock().unwrap().push(request.clone());
            let mut stream = stream;
            let authenticated = request.header("authorization") == Some(expected_basic.as_str());
            let scope = query_value(&request.path, "scope").unwrap_or_default();
            let mut access = Vec::new();
            if let Some(rest) = scope.strip_prefix("repository:")
                && let Some((name, actions)) = rest.rsplit_once(':')
            {
                let actions: Vec<&str> = actions.split(',').collect();
                if authenticated || (name.starts_with("public/") && actions == ["pull"]) {
                    access.push(serde_json::json!({
                        "type": "repository", "name": name, "actions": actions
                    }));
                }
            }
            if request.header("authorization").is_some() && !authenticated {
                respond(
                    &mut stream,
                    "401 Unauthorized",
                    &[],
                    b"{\"details\":\"bad credentials\"}",
                );
                return;
            }
            let token = sign_token(&key, &x5c, access);
            let body =
                serde_json::json!({ "token": token, "access_token": token, "expires_in": 300 });
            respond(
                &mut stream,
                "200 OK",
                &[("Content-Type", "application/json".to_string())],
                body.to_string().as_bytes(),
            );
        });
        TokenServer {
            port,
            certificate,
            requests,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn query_value(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| {
            percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Makes a JWT signed with RS256 by `key`, as the registry's token authentication reads it.
fn sign_token(key: &Path, x5c: &str, access: Vec<serde_json::Value>) -> String {
    let base64url = |data: &[u8]| data_encoding::BASE64URL_NOPAD.encode(data);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({ "typ": "JWT", "alg": "RS256", "x5c": [x5c] });
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": "airlock-test", "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", rand_suffix()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", key.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .unwrap();
    let signature = child.wait_with_output().unwrap().stdout;
    format!("{signing_input}.{}", base64url(&signature))
}

fn rand_suffix() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// How a test registry authenticates clients.
pub enum RegistryAuth<'a> {
    Anonymous,
    Htpasswd { user: &'a str, password: &'a str },
    Token(&'a TokenServer),
}

/// A Docker distribution registry on 127.0.0.1, stopped when dropped.
pub struct Registry {
    pub port: u16,
    pub root: PathBuf,
    pub log: PathBuf,
    tls: bool,
    child: Child,
}

impl Registry {
    pub fn start(dir: &Path, auth: RegistryAuth, tls: Option<&Tls>) -> Registry {
        fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let root = dir.join("storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: airlock-test-secret\n",
            root.display()
        );
        if let Some(tls) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tls.cert.display(),
                tls.key.display()
            ));
        }
        match auth {
            RegistryAuth::Anonymous => {}
            RegistryAuth::Htpasswd { user, password } => {
                let htpasswd = dir.join("htpasswd");
                let line = tool_ok("htpasswd", &["-Bbn", user, password], None);
                fs::write(&htpasswd, line).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: airlock-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            RegistryAuth::Token(server) => config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                server.realm(),
                server.certificate.display()
            )),
        }
        let config_path = dir.join("config.yml");
        fs::write(&config_path, config).unwrap();
        let log = dir.join("registry.log");
        let child = Command::new("/usr/bin/docker-registry")
            .args(["serve", config_path.to_str().unwrap()])
            .stdout(fs::File::create(dir.join("registry.out")).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("docker-registry runs (Debian package docker-registry)");
        let mut registry = Registry {
            port,
            root,
            log,
            tls: tls.is_some(),
            child,
        };
        registry.wait_until_ready();
        registry
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "docker-registry exited with {status}:\n{}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not listen on port {}", self.port);
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes every image of `layout` tagged `tag` (an index with all its platforms) to
    /// `repository:tag` with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, repository: &str, options: &PushOptions) {
        let source = format!("oci:{}:{tag}", layout.display());
        let target = format!("docker://{}/{repository}:{tag}", self.authority());
        let mut args = vec!["--insecure-policy", "copy", "--all", "--quiet"];
        let cert_dir;
        if let Some(tls) = options.tls {
            cert_dir = format!("--dest-cert-dir={}", tls.cert_dir.display());
            args.push(&cert_dir);
        } else if !self.tls {
            args.push("--dest-tls-verify=false");
        }
        let credentials;
        if let Some((user, password)) = options.credentials {
            credentials = format!("--dest-creds={user}:{password}");
            args.push(&credentials);
        }
        args.extend([source.as_str(), target.as_str()]);
        tool_ok("skopeo", &args, None);
    }

    /// Returns the file the registry keeps blob `digest` (`sha256:…`) in.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.root
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Counts the requests the registry has answered.
    pub fn request_count(&self) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("response completed"))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How [`Registry::push`] reaches the registry.
#[derive(Default)]
pub struct PushOptions<'a> {
    pub tls: Option<&'a Tls>,
    pub credentials: Option<(&'a str, &'a str)>,
}

/// Reads a file of a test's directory whole.
pub fn read(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .unwrap_or_else(|error| panic!("cannot open {}: {error}", path.display()))
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}
