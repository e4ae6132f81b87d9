//! `TestApp`: a real server on a fresh data directory, with typed request
//! helpers and fixtures for each role. With `SCRIP_TEST_BACKEND=postgres`
//! (and `SCRIP_TEST_POSTGRES_URL`), every server stores its data in a
//! fresh PostgreSQL schema instead of the SQLite file.

use std::path::{Path, PathBuf};

use reqwest::Method;
use scrip_server::server::{self, Config, Running};
use serde_json::{json, Value};
use tempfile::TempDir;

pub const ADMIN: &str = "sk_admin_test0123456789abcdef0123456789abcdef";
pub const VISA: &str = "4242424242424242";

pub struct TestApp {
    pub url: String,
    pub client: scrip_client::Client,
    running: Option<Running>,
    pub dir: TempDir,
    /// The PostgreSQL schema this server uses, dropped with the app.
    schema: SchemaGuard,
}

// --- the backend under test ---------------------------------------------------------

/// The PostgreSQL server for tests (`SCRIP_TEST_POSTGRES_URL`), if any.
pub fn postgres_base() -> Option<String> {
    std::env::var("SCRIP_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Whether the HTTP tests run against PostgreSQL
/// (`SCRIP_TEST_BACKEND=postgres`); that needs `SCRIP_TEST_POSTGRES_URL`.
pub fn postgres_mode() -> Option<String> {
    match std::env::var("SCRIP_TEST_BACKEND").as_deref() {
        Ok("postgres") => Some(
            postgres_base().expect("SCRIP_TEST_BACKEND=postgres needs SCRIP_TEST_POSTGRES_URL"),
        ),
        Ok("sqlite") | Ok("") | Err(_) => None,
        Ok(other) => panic!("SCRIP_TEST_BACKEND must be sqlite or postgres, not {other}"),
    }
}

/// The file in a data directory that names its PostgreSQL schema.
const SCHEMA_FILE: &str = "test-postgres-schema";

/// Creates a fresh schema on `base` and returns its name.
pub async fn fresh_schema(base: &str) -> String {
    let schema = format!("scrip_test_{}", hex_id());
    scrip_server::store::postgres::PgStore::create_schema(base, &schema)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at SCRIP_TEST_POSTGRES_URL is not usable: {e}"));
    schema
}

fn hex_id() -> String {
    use rand::Rng;
    let bytes: [u8; 6] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// In PostgreSQL mode, the database URL of `data_dir`'s schema (created
/// on first use and named in a file there, so a restart on the same data
/// directory finds the same data), and the schema's name.
pub async fn database_url_for(data_dir: &Path) -> Option<(String, String)> {
    let base = postgres_mode()?;
    std::fs::create_dir_all(data_dir).expect("data dir");
    let file = data_dir.join(SCHEMA_FILE);
    let schema = match std::fs::read_to_string(&file) {
        Ok(name) => name.trim().to_owned(),
        Err(_) => {
            let name = fresh_schema(&base).await;
            std::fs::write(&file, &name).expect("schema file");
            name
        }
    };
    Some((
        scrip_server::store::postgres::url_with_search_path(&base, &schema),
        schema,
    ))
}

/// Drops a test schema when dropped, unless disarmed (its data directory
/// lives on in another server).
#[derive(Default)]
struct SchemaGuard(Option<String>);

impl SchemaGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        if let (Some(schema), Some(base)) = (self.0.take(), postgres_base()) {
            drop_schema_now(base, schema);
        }
    }
}

/// Drops a schema from synchronous code (inside or outside a runtime).
pub fn drop_schema_now(base: String, schema: String) {
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let _ = scrip_server::store::postgres::PgStore::drop_schema(&base, &schema).await;
        });
    })
    .join();
}

/// Runs SQL against the active backend of the data directory `dir`: the
/// SQLite file, or the directory's PostgreSQL schema (for tests that
/// tamper with stored data).
pub async fn execute_sql(dir: &Path, sql: &str) {
    match database_url_for(dir).await {
        None => {
            let conn = rusqlite::Connection::open(dir.join("scrip.db")).expect("open sqlite");
            conn.execute_batch(sql).expect("sql runs");
        }
        Some((url, _)) => {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect to postgres");
            let driver = tokio::spawn(connection);
            client.batch_execute(sql).await.expect("sql runs");
            drop(client);
            let _ = driver.await;
        }
    }
}

/// Everything stored for data directory `dir`, as (name, bytes): its files
/// and, in PostgreSQL mode, every column of every table of its schema
/// (byte columns raw, the rest as text), one entry per table named
/// `postgres:<table>`.
pub async fn stored_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = all_bytes_under(dir);
    if let Some((url, schema)) = database_url_for(dir).await {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect to postgres");
        let driver = tokio::spawn(connection);
        let columns = client
            .query(
                "SELECT table_name::text, column_name::text, data_type::text
                 FROM information_schema.columns WHERE table_schema = $1
                 ORDER BY table_name, ordinal_position",
                &[&schema],
            )
            .await
            .expect("columns");
        let mut tables: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
        for c in &columns {
            let (table, column, kind): (String, String, String) = (c.get(0), c.get(1), c.get(2));
            let sql = if kind == "bytea" {
                format!("SELECT \"{column}\" FROM \"{table}\"")
            } else {
                format!("SELECT \"{column}\"::text FROM \"{table}\"")
            };
            let bytes = tables.entry(table).or_default();
            for r in client.query(&sql, &[]).await.expect("dump") {
                if kind == "bytea" {
                    bytes.extend(r.get::<_, Option<Vec<u8>>>(0).unwrap_or_default());
                } else {
                    bytes.extend(
                        r.get::<_, Option<String>>(0)
                            .unwrap_or_default()
                            .into_bytes(),
                    );
                }
                bytes.push(b'\n');
            }
        }
        drop(client);
        let _ = driver.await;
        out.extend(
            tables
                .into_iter()
                .map(|(t, b)| (PathBuf::from(format!("postgres:{t}")), b)),
        );
    }
    out
}

/// Whether a stored entry is the database (the SQLite file or a table).
pub fn is_database(path: &Path) -> bool {
    let name = path.to_string_lossy();
    name.contains("scrip.db") || name.starts_with("postgres:")
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    /// The error code of an error response ("" if none).
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn kind(&self) -> &str {
        self.body["error"]["type"].as_str().unwrap_or("")
    }
    pub fn id(&self) -> String {
        self.body["id"].as_str().unwrap_or_default().to_owned()
    }
    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(
            self.status, 200,
            "expected 200, got {}: {}",
            self.status, self.body
        );
        self.body
    }
    /// Asserts the status and the error type and code.
    #[track_caller]
    pub fn err(&self, status: u16, kind: &str, code: &str) {
        assert_eq!(
            (self.status, self.kind(), self.code()),
            (status, kind, code),
            "body: {}",
            self.body
        );
        let message = self.body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.len() > 10,
            "an error needs a sentence: {}",
            self.body
        );
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        TestApp::spawn_in(dir).await
    }

    pub async fn spawn_in(dir: TempDir) -> TestApp {
        TestApp::spawn_with(dir, |c| c.master_key = None).await
    }

    /// Stops the server gracefully and hands back its data directory (and
    /// with it, in PostgreSQL mode, its schema).
    pub async fn stop(mut self) -> TempDir {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
        self.schema.disarm();
        self.dir
    }

    /// Runs SQL against this server's database (to tamper with it).
    pub async fn execute_sql(&self, sql: &str) {
        execute_sql(self.dir.path(), sql).await
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        secret: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> Resp {
        let client = if secret.is_empty() {
            self.client.clone()
        } else {
            self.client.with_secret(secret)
        };
        let r = client
            .send(method, path, body.as_ref(), key)
            .await
            .expect("transport");
        Resp {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }

    pub async fn post(&self, path: &str, secret: &str, body: Value) -> Resp {
        self.send(Method::POST, path, secret, Some(body), None)
            .await
    }

    pub async fn post_idem(&self, path: &str, secret: &str, body: Value, key: &str) -> Resp {
        self.send(Method::POST, path, secret, Some(body), Some(key))
            .await
    }

    pub async fn get(&self, path: &str, secret: &str) -> Resp {
        self.send(Method::GET, path, secret, None, None).await
    }

    pub async fn advance(&self, seconds: i64) -> i64 {
        let r = self
            .post(
                "/v1/test_helpers/advance_clock",
                ADMIN,
                json!({ "seconds": seconds }),
            )
            .await
            .ok();
        r["now"].as_i64().expect("now")
    }

    /// A customer with an orchestrator credential: (customer, credential, secret).
    pub async fn orchestrator(&self) -> (String, String, String) {
        let c = self
            .post(
                "/v1/customers",
                ADMIN,
                json!({ "email": "ada@example.com", "name": "Ada" }),
            )
            .await
            .ok();
        let cus = c["id"].as_str().expect("id").to_owned();
        let cred = self
            .post(
                &format!("/v1/customers/{cus}/credentials"),
                ADMIN,
                json!({ "name": "laptop" }),
            )
            .await
            .ok();
        (
            cus,
            cred["id"].as_str().expect("id").to_owned(),
            cred["secret"].as_str().expect("secret").to_owned(),
        )
    }

    /// A provider: (id, secret).
    pub async fn provider(&self, name: &str) -> (String, String) {
        let p = self
            .post("/v1/providers", ADMIN, json!({ "name": name }))
            .await
            .ok();
        (
            p["id"].as_str().expect("id").to_owned(),
            p["secret"].as_str().expect("secret").to_owned(),
        )
    }

    pub async fn card(&self, orch: &str, number: &str) -> String {
        let cvc = if number.starts_with("37") {
            "1234"
        } else {
            "123"
        };
        self.post(
            "/v1/payment_methods",
            orch,
            json!({ "card": { "number": number, "exp_month": 12, "exp_year": 2040, "cvc": cvc } }),
        )
        .await
        .ok()["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    /// Issues a token; `extra` fields override the defaults
    /// (usd, 10000/month). Returns (token id, token secret).
    pub async fn token(
        &self,
        orch: &str,
        pm: &str,
        provider: &str,
        extra: Value,
    ) -> (String, String) {
        let mut body = json!({
            "payment_method": pm, "provider": provider, "currency": "usd",
            "cap": { "amount": 10000, "period": "month" },
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let t = self.post("/v1/tokens", orch, body).await.ok();
        (
            t["id"].as_str().expect("id").to_owned(),
            t["token"].as_str().expect("token").to_owned(),
        )
    }

    pub async fn charge(&self, provider_secret: &str, token: &str, amount: i64) -> Resp {
        self.post(
            "/v1/charges",
            provider_secret,
            json!({ "token": token, "amount": amount, "currency": "usd" }),
        )
        .await
    }
}

/// Everything a charge test needs, set up through the API.
pub struct World {
    pub app: TestApp,
    pub customer: String,
    pub credential: String,
    pub orch: String,
    pub provider: String,
    pub provider_secret: String,
    pub pm: String,
}

impl World {
    pub async fn new() -> World {
        let app = TestApp::spawn().await;
        let (customer, credential, orch) = app.orchestrator().await;
        let (provider, provider_secret) = app.provider("Cloudflare").await;
        let pm = app.card(&orch, VISA).await;
        World {
            app,
            customer,
            credential,
            orch,
            provider,
            provider_secret,
            pm,
        }
    }

    pub async fn token(&self, extra: Value) -> (String, String) {
        self.app
            .token(&self.orch, &self.pm, &self.provider, extra)
            .await
    }

    pub async fn charge(&self, token: &str, amount: i64) -> Resp {
        self.app.charge(&self.provider_secret, token, amount).await
    }

    pub async fn spend(&self, token_id: &str) -> Value {
        self.app
            .get(&format!("/v1/tokens/{token_id}"), &self.orch)
            .await
            .ok()["spend"]
            .clone()
    }
}

/// Every file under `dir`, read whole (database, WAL, keys, logs).
pub fn all_bytes_under(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Whether `word` stands in `haystack` with no ASCII letter or digit
/// right before or after it: a field or column name (`"cvc"`, `cvc TEXT`,
/// `card_cvc`), never three characters inside a random object id.
pub fn mentions(haystack: &[u8], word: &str) -> bool {
    let word = word.as_bytes();
    let apart = |b: Option<&u8>| !b.is_some_and(|b| b.is_ascii_alphanumeric());
    haystack.windows(word.len()).enumerate().any(|(i, w)| {
        w == word
            && apart(i.checked_sub(1).and_then(|j| haystack.get(j)))
            && apart(haystack.get(i + word.len()))
    })
}

/// The `scrip serve` binary as a separate process, for tests that kill it.
pub struct Proc {
    pub child: tokio::process::Child,
    pub url: String,
    /// What the server printed to stdout before it was ready.
    pub stdout_head: String,
}

impl Proc {
    /// Starts `scrip serve` on a free port. `admin_key: None` lets the
    /// server generate one; stderr (the log) goes to `log`.
    pub async fn spawn(
        data_dir: &std::path::Path,
        admin_key: Option<&str>,
        log: &std::path::Path,
    ) -> Proc {
        let database_url = database_url_for(data_dir).await.map(|(url, _)| url);
        Proc::spawn_with(data_dir, admin_key, log, database_url.as_deref(), None).await
    }

    /// Like [`Proc::spawn`], with an explicit database URL (`None`: the
    /// SQLite file in `data_dir`) and master key (`None`: `master.key` in
    /// `data_dir`).
    pub async fn spawn_with(
        data_dir: &std::path::Path,
        admin_key: Option<&str>,
        log: &std::path::Path,
        database_url: Option<&str>,
        master_key: Option<&str>,
    ) -> Proc {
        use tokio::io::AsyncBufReadExt;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_scrip"));
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--test-clock")
            .env("SCRIP_LOG", "debug")
            .env_remove("SCRIP_ADMIN_KEY")
            .env_remove("SCRIP_MASTER_KEY")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::from(log_file))
            .kill_on_drop(true);
        if let Some(k) = admin_key {
            cmd.env("SCRIP_ADMIN_KEY", k);
        }
        cmd.env_remove("SCRIP_DATABASE_URL");
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        if let Some(k) = master_key {
            cmd.env("SCRIP_MASTER_KEY", k);
        }
        let mut child = cmd.spawn().expect("spawn scrip");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut head = String::new();
        let url = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                head.push_str(&line);
                head.push('\n');
                if let Some(url) = line.strip_prefix("scrip listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("scrip exited before listening: {head}");
        })
        .await
        .expect("scrip starts within 30 s");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Proc {
            child,
            url,
            stdout_head: head,
        }
    }

    /// A `TestApp`-like client for this process.
    pub fn client(&self) -> scrip_client::Client {
        scrip_client::Client::new(self.url.clone())
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        secret: &str,
        body: Option<Value>,
    ) -> Resp {
        let r = self
            .client()
            .with_secret(secret)
            .send(method, path, body.as_ref(), None)
            .await
            .expect("transport");
        Resp {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }

    /// SIGTERM, then wait: returns the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("pid");
        let ok = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
        tokio::time::timeout(std::time::Duration::from_secs(40), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("wait")
    }
}

/// How a test receiver answers one delivery.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    Status(u16),
    /// Sleep, then answer with the status.
    Slow(std::time::Duration, u16),
}

/// One recorded delivery: its headers and raw body.
pub type Received = (reqwest::header::HeaderMap, Vec<u8>);

/// A real HTTP server on loopback that records webhook deliveries.
pub struct Receiver {
    pub url: String,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Answers with `script` in order, then 200 for ever.
    pub async fn start(script: Vec<Reply>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Receiver::on(listener, script)
    }

    pub fn on(listener: tokio::net::TcpListener, script: Vec<Reply>) -> Receiver {
        use axum::routing::post;
        let addr = listener.local_addr().expect("addr");
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let script = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
            script,
        )));
        let (r, s) = (received.clone(), script.clone());
        let app = axum::Router::new().route(
            "/hook",
            post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (r, s) = (r.clone(), s.clone());
                    async move {
                        let reply = s.lock().unwrap().pop_front().unwrap_or(Reply::Status(200));
                        r.lock().unwrap().push((headers, body.to_vec()));
                        let status = match reply {
                            Reply::Status(c) => c,
                            Reply::Slow(d, c) => {
                                tokio::time::sleep(d).await;
                                c
                            }
                        };
                        axum::http::StatusCode::from_u16(status).unwrap()
                    }
                },
            ),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            received,
            _server: server,
        }
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Waits (bounded) until `n` deliveries arrived; panics if they don't.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..300 {
            if self.count() >= n {
                return self.received.lock().unwrap().clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("expected {n} deliveries within 30 s, got {}", self.count());
    }
}

impl TestApp {
    /// A server whose configuration `tweak` adjusts.
    pub async fn spawn_with(dir: TempDir, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let database = database_url_for(dir.path()).await;
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            data_dir: dir.path().to_owned(),
            test_clock: true,
            admin_key: Some(ADMIN.to_owned()),
            database_url: database.as_ref().map(|(url, _)| url.clone()),
            ..Default::default()
        };
        tweak(&mut config);
        let running = server::start(config).await.expect("server starts");
        let url = format!("http://{}", running.addr);
        TestApp {
            client: scrip_client::Client::new(url.clone()),
            url,
            running: Some(running),
            dir,
            schema: SchemaGuard(database.map(|(_, schema)| schema)),
        }
    }
}
