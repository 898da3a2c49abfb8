//! Private Postgres and Tansu servers for the tests that stop and restart them, so that restarting
//! never disturbs the tests sharing the stack. Binaries come from the stack script
//! (`scripts/stack.sh env`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|output| output.stdout.starts_with(b"0\n")).unwrap_or(false)
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not open port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct PrivatePostgres {
    pub port: u16,
    data: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let bin = PathBuf::from(std::env::var("AURORA_TEST_PG_BIN").expect("AURORA_TEST_PG_BIN (run through scripts/test)"));
        let data = std::env::temp_dir().join(format!("aurora-test-pg-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&data).unwrap();
        let server = Self { port: free_port(), data, bin };
        if is_root() {
            let user = std::env::var("AURORA_TEST_RUN_USER").unwrap_or_else(|_| "aurora".into());
            assert!(Command::new("chown").arg(&user).arg(&server.data).status().unwrap().success());
        }
        let status = server
            .command("initdb")
            .args(["-U", "aurora", "--auth=trust", "-E", "UTF8", "--locale=C", "-D"])
            .arg(&server.data)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        server.resume();
        server
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let user = std::env::var("AURORA_TEST_RUN_USER").unwrap_or_else(|_| "aurora".into());
            let mut command = Command::new("runuser");
            command.args(["-u", &user, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://aurora@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts (again) on the same port and data.
    pub fn resume(&self) {
        let options = format!("-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories='' -c max_connections=100", self.port);
        let status = self
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data)
            .args(["-o", &options, "-l"])
            .arg(self.data.join("server.log"))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl start failed");
        wait_for_port(self.port, "postgres");
    }

    /// Stops immediately, as a crash would.
    pub fn stop(&self) {
        let status = self
            .command("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl stop failed");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

pub struct PrivateTansu {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    storage: String,
    child: Option<Child>,
}

impl PrivateTansu {
    /// A broker with the stack's engine (SQLite) and its default maintenance (every 10 minutes).
    pub fn start() -> Self {
        Self::start_with_storage("sqlite://tansu.db")
    }

    /// A broker with the stack's engine that runs its maintenance (retention, compaction) at
    /// `interval`, e.g. `1s`, so that what it deletes shows within a test.
    pub fn start_with_maintenance(interval: &str) -> Self {
        Self::start_with_storage(&format!("sqlite://tansu.db?maintenance_interval={interval}"))
    }

    fn start_with_storage(storage: &str) -> Self {
        let bin = PathBuf::from(std::env::var("AURORA_TEST_TANSU_BIN").expect("AURORA_TEST_TANSU_BIN (run through scripts/test)"));
        let dir = std::env::temp_dir().join(format!("aurora-test-tansu-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self { port: free_port(), dir, bin, storage: storage.to_owned(), child: None };
        server.resume();
        server
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn resume(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("tansu.log")).unwrap();
        let child = Command::new(&self.bin)
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", &self.storage])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        wait_for_port(self.port, "tansu");
    }

    /// Kills the broker process.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateTansu {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private OpenBao for one test, made by the stack script (`scratch-vault`): persistent raft
/// storage in its own directory, initialised, unsealed, with KV v2 at `kv/`, the file audit device
/// and a token for Aurora whose policy reaches only `kv/*/aurora/*`. The test may stop, restart
/// and seal it.
pub struct ScratchVault {
    pub port: u16,
    pub dir: PathBuf,
    script: PathBuf,
}

impl ScratchVault {
    pub fn start() -> Self {
        let script = PathBuf::from(std::env::var("AURORA_TEST_STACK_SCRIPT").expect("AURORA_TEST_STACK_SCRIPT (run through scripts/test)"));
        let port = free_port();
        let vault = Self { port, dir: PathBuf::from(stack_dir()).join(format!("scratch-vault-{port}")), script };
        vault.script(&["scratch-vault", &port.to_string()]);
        vault
    }

    fn script(&self, args: &[&str]) {
        let output = Command::new(&self.script).args(args).output().expect("run the stack script");
        assert!(output.status.success(), "stack.sh {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.join("aurora-token")
    }

    /// The configuration that points Aurora at it.
    pub fn config(&self) -> aurora_adapters::config::VaultConfig {
        aurora_adapters::config::VaultConfig { addr: self.addr(), token_file: Some(self.token_file()), ..Default::default() }
    }

    pub fn aurora_env(&self) -> Vec<(String, String)> {
        vec![("AURORA_VAULT_ADDR".into(), self.addr()), ("AURORA_VAULT_TOKEN_FILE".into(), self.token_file().display().to_string())]
    }

    pub fn stop(&self) {
        self.script(&["vault-stop", &self.dir.display().to_string()]);
    }

    /// Starts it again on its data and unseals it.
    pub fn restart(&self) {
        self.script(&["vault-start", &self.dir.display().to_string(), &self.port.to_string()]);
    }

    /// Seals it with the root token, as an operator would.
    pub fn seal(&self) {
        let status = self.bao(&["operator", "seal"]).status().unwrap();
        assert!(status.success(), "sealing failed");
    }

    pub fn unseal(&self) {
        self.script(&["vault-unseal", &self.dir.display().to_string(), &self.port.to_string()]);
    }

    /// A `bao` command as the root of this server.
    pub fn bao(&self, args: &[&str]) -> Command {
        let init: serde_json::Value = serde_json::from_slice(&std::fs::read(self.dir.join("init.json")).unwrap()).unwrap();
        let mut command = Command::new(std::env::var("AURORA_TEST_BAO_BIN").expect("AURORA_TEST_BAO_BIN"));
        command
            .args(args)
            .env("BAO_ADDR", self.addr())
            .env("BAO_TOKEN", init["root_token"].as_str().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// The audit device's log: one JSON object per request and response.
    pub fn audit_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl Drop for ScratchVault {
    fn drop(&mut self) {
        let _ = Command::new(&self.script).args(["vault-stop", &self.dir.display().to_string()]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stack_dir() -> String {
    std::env::var("AURORA_STACK_DIR").unwrap_or_else(|_| "/var/lib/aurora".into())
}

/// A private moto server (AWS APIs) for one test. With `no_auth_actions`, moto accepts that many
/// requests unauthenticated (the test creates its IAM users with them) and from then on checks
/// every request's Signature Version 4 against the IAM users' keys and policies, as AWS does.
pub struct PrivateMoto {
    pub port: u16,
    child: Child,
}

impl PrivateMoto {
    pub fn start(no_auth_actions: Option<u32>) -> Self {
        let home = PathBuf::from(std::env::var("AURORA_TEST_MOTO_HOME").expect("AURORA_TEST_MOTO_HOME (run through scripts/test)"));
        let port = free_port();
        let mut command = Command::new(home.join("bin/moto_server"));
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]).env("PYTHONPATH", &home).stdout(Stdio::null()).stderr(Stdio::null());
        if let Some(count) = no_auth_actions {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", count.to_string());
        }
        let child = command.spawn().expect("start moto");
        wait_for_port(port, "moto");
        Self { port, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
