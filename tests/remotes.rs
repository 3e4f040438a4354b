//! The Git control plane over authenticated remotes, against real servers on loopback:
//! `ssh://` through OpenSSH's sshd (key authentication, the host key checked against
//! known_hosts) and `https://` through `git http-backend` behind TLS and Basic
//! authentication (a token), as Git hosts serve them. No credential may show in output.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use gitfleet::core::status::NodeState;
use gitfleet::git::{GitAuth, Mirror};
use gitfleet::secret::Secret;

use common::{TempDir, example_remote, free_port, git, status_record as record};

/// Runs a command that must succeed (key and certificate generation).
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn keygen(path: &Path) {
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            path.to_str().unwrap(),
        ],
    );
}

/// An sshd on a loopback port that lets the client key log in as the current user and
/// run Git's upload-pack and receive-pack on the repositories of this machine.
struct Sshd {
    child: Child,
    port: u16,
    host_key_pub: String,
}

impl Sshd {
    fn start(dir: &Path, client_key_pub: &Path) -> Self {
        let port = free_port();
        keygen(&dir.join("host_key"));
        std::fs::copy(client_key_pub, dir.join("authorized_keys")).unwrap();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
                 StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\n",
                d = dir.display()
            ),
        )
        .unwrap();
        // sshd's privilege separation directory; Debian creates it only when the
        // service starts.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd (run the tests as root)");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("/usr/sbin/sshd (scripts/testenv install puts it there)");
        wait_for_port(port);
        let host_key_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        Sshd {
            child,
            port,
            host_key_pub,
        }
    }

    fn url(&self, repo: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, repo.display())
    }

    /// A known_hosts line for this server with `key` ("type base64").
    fn known_hosts_line(&self, key: &str) -> String {
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        format!("[127.0.0.1]:{} {}\n", self.port, key.join(" "))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// The record the remote's status branch holds for `node`, read with the real `git`.
fn remote_record(bare: &Path, node: &str) -> String {
    git(bare, &["show", &format!("fleet-status:nodes/{node}.toml")])
}

struct SshFixture {
    root: TempDir,
    bare: PathBuf,
    client_key: PathBuf,
    sshd: Sshd,
}

fn ssh_fixture(label: &str) -> SshFixture {
    let root = TempDir::new(label);
    let bare = example_remote(root.path());
    let client_key = root.path().join("client_key");
    keygen(&client_key);
    let sshd = Sshd::start(root.path(), &root.path().join("client_key.pub"));
    SshFixture {
        root,
        bare,
        client_key,
        sshd,
    }
}

impl SshFixture {
    fn mirror(&self, name: &str, auth: GitAuth) -> Mirror {
        Mirror::open(&self.root.path().join(name), &self.sshd.url(&self.bare))
            .unwrap()
            .with_auth(auth)
    }

    fn known_hosts(&self, name: &str, content: &str) -> PathBuf {
        let path = self.root.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

#[test]
fn ssh_remote_fetches_and_pushes_with_a_key_checked_against_hashed_known_hosts() {
    let f = ssh_fixture("ssh-ok");
    let known_hosts = f.known_hosts(
        "known_hosts",
        &f.sshd.known_hosts_line(&f.sshd.host_key_pub),
    );
    // Hash the names, as Debian's ssh does by default (HashKnownHosts yes).
    run("ssh-keygen", &["-H", "-f", known_hosts.to_str().unwrap()]);
    assert!(
        std::fs::read_to_string(&known_hosts)
            .unwrap()
            .starts_with("|1|")
    );
    let mirror = f.mirror(
        "mirror.git",
        GitAuth {
            ssh_key: Some(f.client_key.clone()),
            known_hosts: vec![known_hosts],
            ..GitAuth::default()
        },
    );

    let first = mirror.fetch(&["release", "fleet-status"]).unwrap();
    assert!(first.objects > 0, "{first:?}");
    let idle = mirror.fetch(&["release", "fleet-status"]).unwrap();
    assert_eq!(
        (idle.objects, idle.bytes),
        (0, 0),
        "an idle poll moves no pack"
    );
    assert_eq!(
        mirror.tip("release").unwrap(),
        Some(git(&f.bare, &["rev-parse", "release"]))
    );
    mirror
        .push_record("fleet-status", &record("eu-fra-1"), 5)
        .unwrap();
    assert!(remote_record(&f.bare, "eu-fra-1").contains("node = \"eu-fra-1\""));
}

#[test]
fn ssh_remote_refuses_unknown_and_changed_host_keys_and_unknown_client_keys() {
    let f = ssh_fixture("ssh-refused");
    let trusted = f.known_hosts("trusted", &f.sshd.known_hosts_line(&f.sshd.host_key_pub));
    let fetch_error = |auth: GitAuth| {
        f.mirror("m.git", auth)
            .fetch(&["release"])
            .unwrap_err()
            .to_string()
    };

    let empty = f.known_hosts("empty", "");
    let error = fetch_error(GitAuth {
        ssh_key: Some(f.client_key.clone()),
        known_hosts: vec![empty],
        ..GitAuth::default()
    });
    assert!(
        error.contains("host key of 127.0.0.1 is not listed")
            && error.contains(&format!("ssh-keyscan -p {} 127.0.0.1", f.sshd.port)),
        "{error}"
    );

    let other_key = f.root.path().join("other_host_key");
    keygen(&other_key);
    let other = std::fs::read_to_string(other_key.with_extension("pub")).unwrap();
    let changed = f.known_hosts("changed", &f.sshd.known_hosts_line(&other));
    let error = fetch_error(GitAuth {
        ssh_key: Some(f.client_key.clone()),
        known_hosts: vec![changed],
        ..GitAuth::default()
    });
    assert!(error.contains("differs from the key listed"), "{error}");

    let stranger = f.root.path().join("stranger_key");
    keygen(&stranger);
    let error = fetch_error(GitAuth {
        ssh_key: Some(stranger),
        known_hosts: vec![trusted.clone()],
        ..GitAuth::default()
    });
    assert!(error.contains("refused the credentials"), "{error}");

    let error = fetch_error(GitAuth {
        known_hosts: vec![trusted],
        ..GitAuth::default()
    });
    assert!(error.contains("asks for an SSH key"), "{error}");
}

/// `git http-backend` behind TLS and Basic authentication (tests/fixtures/git-https-server.py).
struct HttpsGit {
    child: Child,
    port: u16,
    cert: PathBuf,
}

const TOKEN: &str = "glpat-t0ken-never-printed";

impl HttpsGit {
    fn start(dir: &Path, repos: &Path) -> Self {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=gitfleet-test",
                "-addext",
                "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
        );
        let password = dir.join("server-password");
        std::fs::write(&password, TOKEN).unwrap();
        let port_file = dir.join("https-port");
        let child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/git-https-server.py"
            ))
            .args([repos, &cert, &key])
            .arg("fleet-bot")
            .args([&password, &port_file])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3");
        let port = (0..100)
            .find_map(|_| {
                std::thread::sleep(Duration::from_millis(50));
                std::fs::read_to_string(&port_file).ok()?.parse().ok()
            })
            .expect("the https server writes its port");
        HttpsGit { child, port, cert }
    }

    fn url(&self, repo: &str) -> String {
        format!("https://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for HttpsGit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `gitfleet plan` for a node of the example fleet as the server's user, with extra
/// arguments.
fn plan(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gitfleet"))
        .args(["plan", "--node", "eu-fra-1"])
        .env("GITFLEET_GIT_USERNAME", "fleet-bot")
        .args(args)
        .env_remove("GITFLEET_GIT_PASSWORD")
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

use common::output_text as text;

#[test]
fn https_remote_with_a_token_from_a_file_or_the_environment_and_a_private_ca() {
    let root = TempDir::new("https");
    example_remote(root.path());
    let server = HttpsGit::start(root.path(), root.path());
    let url = server.url("fleet.git");
    let ca = server.cert.to_str().unwrap();
    let token_file = root.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token_file = token_file.to_str().unwrap();

    let out = plan(
        &[
            "--repo",
            &url,
            "--git-password-file",
            token_file,
            "--git-ca-file",
            ca,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("batch     canary"), "{}", text(&out));

    let out = plan(
        &["--repo", &url, "--git-ca-file", ca],
        &[("GITFLEET_GIT_PASSWORD", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Without the private CA the server is not trusted.
    let out = plan(&["--repo", &url, "--git-password-file", token_file], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("certificate"), "{}", text(&out));

    // No token, a wrong token, or a wrong one in the URL: a clear refusal, nothing leaked.
    let out = plan(&["--repo", &url, "--git-ca-file", ca], &[]);
    assert!(
        text(&out).contains("asks for credentials"),
        "{}",
        text(&out)
    );
    let wrong = root.path().join("wrong");
    std::fs::write(&wrong, "wrong-token-value").unwrap();
    let out = plan(
        &[
            "--repo",
            &url,
            "--git-ca-file",
            ca,
            "--git-password-file",
            wrong.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        text(&out).contains("refused the credentials"),
        "{}",
        text(&out)
    );
    let in_url = url.replace("https://", "https://fleet-bot:url-secret-value@");
    let out = plan(&["--repo", &in_url, "--git-ca-file", ca], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    for secret in ["wrong-token-value", "url-secret-value", TOKEN] {
        assert!(!text(&out).contains(secret), "{}", text(&out));
    }
}

#[test]
fn https_remote_takes_status_pushes() {
    let root = TempDir::new("https-push");
    let bare = example_remote(root.path());
    let server = HttpsGit::start(root.path(), root.path());
    // SAFETY: this test process sets libgit2's global TLS roots once, before any Git call.
    unsafe { git2::opts::set_ssl_cert_file(&server.cert) }.unwrap();
    let mirror = Mirror::open(&root.path().join("mirror.git"), &server.url("fleet.git"))
        .unwrap()
        .with_auth(GitAuth {
            username: Some("fleet-bot".into()),
            password: Some(Secret::new(TOKEN)),
            ..GitAuth::default()
        });
    mirror
        .push_record("fleet-status", &record("us-nyc-1"), 5)
        .unwrap();
    let mut second = record("us-nyc-1");
    second.state = NodeState::Converging;
    mirror.push_record("fleet-status", &second, 5).unwrap();
    assert!(remote_record(&bare, "us-nyc-1").contains("state = \"converging\""));
    let idle = mirror.fetch(&["release", "fleet-status"]).unwrap();
    let idle_again = mirror.fetch(&["release", "fleet-status"]).unwrap();
    assert!(idle.objects > 0, "release was not fetched yet: {idle:?}");
    assert_eq!(
        (idle_again.objects, idle_again.bytes),
        (0, 0),
        "an idle poll moves no pack"
    );
}
