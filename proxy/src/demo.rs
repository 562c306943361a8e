//! `nexus-edge demo`: a newcomer's first five minutes.
//!
//! Starts two tiny demo instances on loopback, makes a fresh signing key, writes it (readable
//! by this user only), its JWKS and a bindings file into a state directory, starts the real
//! router on them and prints `curl` commands with freshly minted tokens, and the `nexus-edge
//! token` command that mints more with the saved key (for a tenant the reader activates, say).
//! Editing the printed bindings file rebinds a tenant live, which shows the hot reload too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use nexus_config::{FileStoreSettings, JwksSource, StoreSettings};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::auth::mint::SigningKey;

/// The `kid` of the demo's signing key.
/// Not the repository's demo key ids (`deploy/demo`): a token minted with those keys is then
/// refused as signed by an unknown key, not as a bad signature under a key of the same name.
const DEMO_KID: &str = "demo-session-es256";

/// Arguments of `nexus-edge demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address of the router.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the ops listener (metrics, probes).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Where the demo writes its key set and bindings file (default: a fresh temp directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Starts a demo instance: answers every request with its own name and the identity
/// headers the router sent, so a reader sees where a request went and as whom.
pub async fn spawn_demo_instance(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                let mut request_line = String::new();
                let mut headers = Vec::new();
                if reader.read_line(&mut request_line).await.is_err() {
                    return;
                }
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" || line == "\n" => break,
                        Ok(_) => headers.push(line.trim_end().to_owned()),
                    }
                }
                // A header the router did not send shows as null, not "": a public path's
                // request carries no identity headers at all.
                let get = |name: &str| {
                    headers.iter().find_map(|h| {
                        let (k, v) = h.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                };
                let body = serde_json::json!({
                    "instance": name,
                    "request": request_line.trim_end(),
                    "x-tenant-id": get("x-tenant-id"),
                    "x-org-id": get("x-org-id"),
                    "x-user-id": get("x-user-id"),
                    "x-request-id": get("x-request-id"),
                })
                .to_string()
                    + "\n";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = write.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}

fn demo_bindings(acme: SocketAddr, globex: SocketAddr) -> serde_json::Value {
    serde_json::json!({
        "format": "nexus-edge.bindings/v1",
        "bindings": [
            {
                "tenant_id": "acme", "subscription_id": "sub-acme", "instance_id": "demo-instance-a",
                "instance_url": format!("http://{acme}"), "identity_org_id": "org-acme",
                "status": "active", "plan": "team", "region": "local", "domains": ["acme.example.test"]
            },
            {
                "tenant_id": "globex", "subscription_id": "sub-globex", "instance_id": "demo-instance-b",
                "instance_url": format!("http://{globex}"), "identity_org_id": "org-globex",
                "status": "past_due", "plan": "solo", "region": "local"
            },
            {
                "tenant_id": "initech", "subscription_id": "sub-initech", "instance_id": "demo-instance-b",
                "instance_url": format!("http://{globex}"),
                "status": "provisioning", "plan": "team", "region": "local"
            }
        ]
    })
}

/// Makes a new directory under `base`, `nexus-edge-demo-` and a random suffix, readable by
/// this user only. `create`, not `create_dir_all`: a name that exists is someone else's,
/// and another is tried.
fn fresh_dir(base: &std::path::Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut last = None;
    for _ in 0..16 {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let dir = base.join(format!("nexus-edge-demo-{}", &suffix[..12]));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no fresh name")))
}

/// Writes `content` to a new file at `path`, in place of whatever was there: a file or a
/// symlink there is removed first, never written through.
fn write_new(path: &std::path::Path, content: String) -> std::io::Result<()> {
    write_new_with_mode(path, content, 0o644)
}

/// [`write_new`] with the file's permission bits (`0o600` for the private key), set as it is
/// made: never readable by others, even for a moment.
fn write_new_with_mode(path: &std::path::Path, content: String, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?
        .write_all(content.as_bytes())
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("nexus-edge demo: {msg}");
    ExitCode::FAILURE
}

/// `word` as one shell word: as it is when it holds nothing a shell reads specially, else in
/// single quotes (a `TMPDIR` or `--dir` with a space would split a pasted command).
pub(crate) fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs the demo until Ctrl-C.
pub fn run(args: &DemoArgs) -> ExitCode {
    // The ports are tried first: before the curl lines are printed (lines for a port another
    // process holds would reach that process), and before anything is written (a start that
    // fails leaves no key behind). A port 0 becomes the one the system gave, so the lines
    // name it. Both held at once, so that one address given for both is found here too.
    let try_port = |addr: std::net::SocketAddr, which: &str, flag: &str| {
        std::net::TcpListener::bind(addr)
            .and_then(|l| Ok((l.local_addr()?, l)))
            .map_err(|e| {
                format!(
                    "cannot listen on {addr} ({which}): {e}; {flag} ADDR picks another \
                     (127.0.0.1:0: any free port)"
                )
            })
    };
    let (listen, admin_listen) = match try_port(args.listen, "public", "--listen") {
        Err(e) => return fail(e),
        Ok((listen, held)) => match try_port(args.admin_listen, "ops", "--admin-listen") {
            Err(e) => return fail(e),
            Ok((admin, _)) => {
                drop(held);
                (listen, admin)
            }
        },
    };
    // The default directory is made afresh, private to this user, with a name no one can
    // take first (a fixed name in a shared /tmp could be another user's, holding links the
    // demo would write through). It is kept after Ctrl-C, as the README says: the printed
    // bindings file is the user's to look at.
    let dir = match &args.dir {
        Some(d) => {
            if let Err(e) = std::fs::create_dir_all(d) {
                return fail(format!("{}: {e}", d.display()));
            }
            d.clone()
        }
        None => match fresh_dir(&std::env::temp_dir()) {
            Ok(d) => d,
            Err(e) => return fail(format!("{}: {e}", std::env::temp_dir().display())),
        },
    };

    // The demo instances live on their own runtime thread for the life of the process.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        rt.block_on(async {
            let addrs = async {
                Ok((
                    spawn_demo_instance("demo-instance-a").await?,
                    spawn_demo_instance("demo-instance-b").await?,
                ))
            };
            let _ = tx.send(addrs.await);
            std::future::pending::<()>().await;
        });
    });
    let (acme, globex) = match rx.recv() {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return fail(format!("cannot start demo instances: {e}")),
        Err(e) => return fail(format!("cannot start demo instances: {e}")),
    };

    let (key, key_pem) = match SigningKey::generate_es256_pem(DEMO_KID) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let jwks = serde_json::json!({ "keys": [key.public_jwk()] });
    let jwks_path = dir.join("jwks.json");
    let bindings_path = dir.join("bindings.json");
    let key_path = dir.join("signing-key.pem");
    let key_write = write_new(&jwks_path, format!("{jwks:#}\n"))
        .and_then(|()| write_new_with_mode(&key_path, key_pem, 0o600))
        .and_then(|()| {
            write_new(
                &bindings_path,
                format!("{:#}\n", demo_bindings(acme, globex)),
            )
        });
    if let Err(e) = key_write {
        return fail(format!("{}: {e}", dir.display()));
    }

    let mut settings = nexus_config::embedded_default();
    settings.server.listen = listen;
    settings.server.admin_listen = Some(admin_listen);
    settings.server.shutdown_grace = Duration::from_secs(1);
    // A demo on a laptop needs no 10,000 clients: limits the usual soft open-file limit
    // (1,024) holds with the ops listener's, so its first screen has no warning that the
    // limit is too low for them.
    settings.server.max_connections = 256;
    settings.upstream.idle_connections = 64;
    // What a Solo workspace's plan leaves out, as an operator would list it for its app.
    settings.tenancy.refused_paths.isolated =
        vec!["/api/integrations/".to_owned(), "/api/ci/".to_owned()];
    settings.auth.jwks = JwksSource::File(jwks_path);
    settings.store = StoreSettings::File(FileStoreSettings {
        path: Some(bindings_path.clone()),
        poll_interval: Duration::from_millis(500),
    });
    crate::logging::init(&settings.log);

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let iss = settings.auth.issuers.first().cloned().unwrap_or_default();
    let aud = settings.auth.audiences.first().cloned().unwrap_or_default();
    let mint = |tenant: &str, org: &str, user: &str| {
        key.sign(&serde_json::json!({
            "iss": iss, "aud": aud, "sub": user, "iat": now, "exp": now + 3600,
            "tenant_id": tenant, "org_id": org,
        }))
    };
    let (acme_token, globex_token) = match (
        mint("acme", "org-acme", "alice"),
        mint("globex", "org-globex", "bob"),
    ) {
        (Ok(a), Ok(g)) => (a, g),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    let base = settings
        .tenancy
        .base_domains
        .first()
        .cloned()
        .unwrap_or_default();
    let l = listen;
    // The command that runs this binary, so the `token` line can be pasted as it is.
    let me = std::env::current_exe()
        .map(|p| shell_word(&p.display().to_string()))
        .unwrap_or_else(|_| "nexus-edge".to_owned());
    println!(
        "\nNexus Edge demo\n===============\n\
         router  http://{l}   ops http://{admin}/metrics\n\
         demo instances: demo-instance-a (acme) -> {acme}, demo-instance-b (globex, initech) -> {globex}\n\
         bindings file (edit it to rebind a tenant live): {b}\n\n\
         # 1. routed: alice of acme reaches acme's instance\n\
         curl -si -H 'Host: acme.{base}' -H 'Authorization: Bearer {acme_token}' http://{l}/dashboard\n\n\
         # 2. cross-tenant: alice's acme token on globex's host -> 403\n\
         curl -si -H 'Host: globex.{base}' -H 'Authorization: Bearer {acme_token}' http://{l}/dashboard\n\n\
         # 3. no token -> 401 with WWW-Authenticate\n\
         curl -si -H 'Host: acme.{base}' http://{l}/dashboard\n\n\
         # 4. globex is past_due: served, with a billing notice header for the app\n\
         curl -si -H 'Host: globex.{base}' -H 'Authorization: Bearer {globex_token}' http://{l}/\n\n\
         # 5. globex is on the Solo plan (isolated): no integrations -> 403 not_in_plan\n\
         curl -si -H 'Host: globex.{base}' -H 'Authorization: Bearer {globex_token}' http://{l}/api/integrations/slack\n\n\
         # 6. initech is still being provisioned -> 503 with Retry-After\n\
         curl -si -H 'Host: initech.{base}' http://{l}/\n\n\
         # 7. acme's custom domain, public login page (no token needed)\n\
         curl -si -H 'Host: acme.example.test' http://{l}/login\n\n\
         # 8. more tokens, for any tenant (initech's, once you set its status to active in\n\
         #    the bindings file), signed with the demo's key, saved beside the bindings\n\
         {me} token --tenant initech --key {k} --kid {DEMO_KID} --iss {iss} --aud {aud}\n\n\
         Ctrl-C stops the demo.\n",
        admin = admin_listen,
        b = bindings_path.display(),
        k = shell_word(&key_path.display().to_string()),
    );

    crate::server::serve(settings, None, false)
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn a_path_is_one_shell_word() {
        for (path, word) in [
            (
                "/tmp/nexus-edge-demo-x1/signing-key.pem",
                "/tmp/nexus-edge-demo-x1/signing-key.pem",
            ),
            ("/tmp/my demo/key.pem", "'/tmp/my demo/key.pem'"),
            ("/tmp/it's/key.pem", r"'/tmp/it'\''s/key.pem'"),
            ("", "''"),
        ] {
            assert_eq!(shell_word(path), word);
        }
    }
}
