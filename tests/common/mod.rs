//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fleet;
pub mod mariadb;
pub mod rabbit;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test (for the demo example, the debug build).
/// `CHAINWATCH_BIN` names another (the benchmark, built quickly in the dev
/// profile, runs the release daemon through it).
pub fn bin() -> PathBuf {
    if let Some(b) = std::env::var_os("CHAINWATCH_BIN") {
        return PathBuf::from(b);
    }
    option_env!("CARGO_BIN_EXE_chainwatch")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/chainwatch"))
}

/// True when running under CI (`CI=true`): prerequisites must be there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skip (loudly) outside CI when a prerequisite is missing; fail in CI.
pub fn prerequisite(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("prerequisite missing under CI=true: {what}");
    }
    eprintln!("\n*** SKIPPED: {what} (set up the machine with .ci/run, or run as root) ***\n");
    false
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Write `<dir>/chainwatch.toml` for a node whose files live in `dir`
/// (state, hosts, user-data) with its status socket at `sock`, and `extra`
/// appended; returns its path.
pub fn node_config(dir: &Path, sock: &Path, extra: &str) -> PathBuf {
    let config = dir.join("chainwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nstate_dir = \"{d}/state\"\nstatus_socket = \"{s}\"\nhosts_file = \"{d}/hosts\"\n[identity]\nuser_data_file = \"{d}/user-data\"\n{extra}",
            d = dir.display(),
            s = sock.display(),
        ),
    )
    .unwrap();
    config
}

/// One daemon on this host in observe mode, in a directory of its own:
/// user-data naming its role and ID, a hosts file with localhost only,
/// state in `<dir>/state`, the status socket at `<dir>/run/status.sock`
/// and `extra` appended to its config.
pub struct LocalNode {
    /// Its files; removed on drop.
    pub dir: tempfile::TempDir,
    /// Its config file.
    pub config: PathBuf,
    /// Its status socket.
    pub sock: PathBuf,
}

impl LocalNode {
    /// Write the files of `role` `id` (nothing runs yet).
    pub fn new(role: &str, id: u32, extra: &str) -> LocalNode {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("user-data"),
            format!("#cloud-config\n# chainwatch: role={role} id={id}\n"),
        )
        .unwrap();
        std::fs::write(d.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        let sock = d.join("run/status.sock");
        let config = node_config(d, &sock, extra);
        LocalNode { dir, config, sock }
    }

    /// `chainwatch --log-format json run --observe`, its log in `<dir>/log`.
    pub fn spawn(&self) -> Proc {
        let log = std::fs::File::create(self.dir.path().join("log")).unwrap();
        Proc(
            Command::new(bin())
                .arg("--config")
                .arg(&self.config)
                .args(["--log-format", "json", "run", "--observe"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

/// A number from the environment (a soak's length, a run count), or
/// `default` when unset or not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The lines of a `--log-format json` log (a daemon's or the worker's),
/// parsed; lines that are not JSON objects (a panic, say) are skipped.
pub fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(serde_json::Value::is_object)
        .collect()
}

/// When a JSON log line was written, in ms since the Unix epoch: its
/// `timestamp`, RFC 3339 in UTC as tracing-subscriber writes it
/// (`2026-01-02T03:04:05.123456Z`). Panics on a line without one.
pub fn log_ms(line: &serde_json::Value) -> u64 {
    let ts = line["timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("a log line without a timestamp: {line}"));
    rfc3339_ms(ts).unwrap_or_else(|| panic!("not an RFC 3339 UTC time stamp: {ts:?}"))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+00:00)` in ms since the Unix epoch.
fn rfc3339_ms(ts: &str) -> Option<u64> {
    let ts = ts.strip_suffix('Z').or_else(|| ts.strip_suffix("+00:00"))?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms_frac: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    let ms = ((days * 24 + h) * 60 + min) * 60_000 + s * 1000 + ms_frac;
    u64::try_from(ms).ok()
}

/// Whether a command is on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

/// Run a command, panic with its output if it fails.
/// Point `cmd`'s AWS SDK at `endpoint` (moto, or the EC2 proxy) with test
/// credentials and no IMDS.
pub fn aws_env<'a>(cmd: &'a mut Command, endpoint: &str) -> &'a mut Command {
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

/// A CloudWatch Logs client for the emulator at `endpoint`.
pub async fn logs_client(endpoint: &str) -> aws_sdk_cloudwatchlogs::Client {
    aws_sdk_cloudwatchlogs::Client::new(&aws_test_config(endpoint).load().await)
}

/// The SDK's config loader for the emulator at `endpoint`, with test
/// credentials.
fn aws_test_config(endpoint: &str) -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
}

/// The records of CloudWatch Logs stream `stream` in `group`, parsed.
pub async fn log_records(endpoint: &str, group: &str, stream: &str) -> Vec<serde_json::Value> {
    let out = logs_client(endpoint)
        .await
        .get_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await;
    out.map(|o| {
        o.events()
            .iter()
            .filter_map(|e| serde_json::from_str(e.message()?).ok())
            .collect()
    })
    .unwrap_or_default()
}

/// `chainwatch --config <config> <args>` against the AWS API at `endpoint`.
pub fn chainwatch_aws(endpoint: &str, config: &Path, args: &[&str]) -> std::process::Output {
    aws_env(
        Command::new(bin()).arg("--config").arg(config).args(args),
        endpoint,
    )
    .output()
    .expect("chainwatch runs")
}

/// A command's stdout and stderr, for assertion messages and matching.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The pid of the first process named `comm` in network namespace `ns`.
pub fn pid_in(ns: &str, comm: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .map(|c| c.trim() == comm)
                .unwrap_or(false)
        })
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run a command, ignore failure (cleanup).
pub fn sh_quiet(cmd: &str) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child spawned in a process group of its own
/// (`CommandExt::process_group(0)`): dropping it kills the whole group, so
/// that what it started dies with it (the worker's `ansible-playbook`,
/// which a killed worker would otherwise leave running, loading the CPU
/// of every later scenario).
pub struct ProcGroup(pub Child);

impl Drop for ProcGroup {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawn a helper that prints "listening on ADDR:PORT" first; return it
/// and its `http://ADDR:PORT`.
pub fn spawn_listening(mut cmd: Command) -> (Proc, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("helper starts");
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("helper prints its address");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected helper output {line:?}"))
        .to_string();
    (Proc(child), format!("http://{addr}"))
}

/// A script in tests/support.
pub fn support(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

/// `python3`, or `ip netns exec NS python3`.
fn python(netns: Option<&str>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "python3"]);
            c
        }
        None => Command::new("python3"),
    }
}

/// The IMDSv2 stand-in (`tests/support/imds.py`).
pub struct Imds {
    pub proc: Proc,
    pub endpoint: String,
}

impl Imds {
    /// Start it, serving `user_data` (a path; may not exist yet). `netns`
    /// runs it inside a network namespace.
    pub fn start(user_data: &Path, netns: Option<&str>, bind: &str) -> Imds {
        Self::start_for(user_data, netns, bind, "i-0123456789abcdef0")
    }

    /// The same, for a given instance ID.
    pub fn start_for(user_data: &Path, netns: Option<&str>, bind: &str, instance: &str) -> Imds {
        let mut cmd = python(netns);
        cmd.arg(support("imds.py"))
            .args([
                "--bind",
                bind,
                "--port",
                "0",
                "--instance-id",
                instance,
                "--user-data",
            ])
            .arg(user_data);
        let (proc, endpoint) = spawn_listening(cmd);
        Imds { proc, endpoint }
    }

    /// Its counters.
    pub fn stats(&self) -> serde_json::Value {
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen('{}/_stats').read().decode())",
                self.endpoint
            ))
            .output()
            .expect("python3 runs");
        serde_json::from_slice(&out.stdout).expect("stats are JSON")
    }
}

/// The Python virtualenv `.ci/run` makes (moto, ...).
pub fn venv() -> PathBuf {
    std::env::var_os("CHAINWATCH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/chainwatch-venv"))
}

/// A free TCP port on `bind`.
pub fn free_port(bind: &str) -> u16 {
    std::net::TcpListener::bind((bind, 0))
        .expect("bind a free port")
        .local_addr()
        .unwrap()
        .port()
}

/// moto's server mode: the EC2 (and CloudWatch Logs) API emulator.
pub struct Moto {
    pub proc: Proc,
    pub endpoint: String,
}

impl Moto {
    /// Whether moto is installed in the virtualenv.
    pub fn available() -> bool {
        venv().join("bin/moto_server").exists()
    }

    /// Start it on `bind` (optionally inside a namespace).
    pub fn start(bind: &str) -> Moto {
        let port = free_port(bind);
        let child = Command::new(venv().join("bin/moto_server"))
            .args(["-H", bind, "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let proc = Proc(child);
        wait_for("moto to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect((bind, port)).ok()
        });
        // The first EC2 call loads moto's EC2 backend, which takes seconds on
        // a busy machine: make it here, patiently, so the tests' clients
        // (3 s per call, to bound the fence) meet a warm emulator.
        warm_up(bind, port);
        Moto {
            proc,
            endpoint: format!("http://{bind}:{port}"),
        }
    }
}

/// Warm moto's EC2 backend: its first `RunInstances` loads AMI and
/// instance-type data, which takes seconds on a busy machine. One throwaway
/// instance (untagged, so no fleet sees it), terminated at once; each call
/// waits up to 60 s.
fn warm_up(bind: &str, port: u16) {
    use std::io::{Read, Write};
    let call = |body: &str| -> String {
        let req = format!(
            // moto routes by the credential scope's service name.
            "POST / HTTP/1.1\r\nHost: {bind}:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut stream = std::net::TcpStream::connect((bind, port)).expect("moto listens");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("a read time-out");
        stream
            .write_all(req.as_bytes())
            .expect("moto takes a request");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    };
    // A busy machine (many emulators starting at once) can drop the first
    // connections: try a few times.
    let mut run = String::new();
    for _ in 0..5 {
        run = call(
            "Action=RunInstances&Version=2016-11-15&ImageId=ami-12c6146b&MinCount=1&MaxCount=1&InstanceType=t3.micro",
        );
        if run.contains("<instanceId>") {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let id = run
        .split("<instanceId>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap_or_else(|| panic!("moto did not launch its warm-up instance: {run}"));
    call(&format!(
        "Action=TerminateInstances&Version=2016-11-15&InstanceId.1={id}"
    ));
}

/// The misbehaving EC2 proxy (`tests/support/ec2_proxy.py`) in front of
/// `upstream`.
pub struct Ec2Proxy {
    pub proc: Proc,
    pub endpoint: String,
}

impl Ec2Proxy {
    /// A proxy whose stops are applied at once.
    pub fn start(upstream: &str) -> Ec2Proxy {
        Self::start_on(upstream, "127.0.0.1", 0, 0)
    }

    /// A proxy whose stops take `stop_ms` (graceful OS shutdown) or
    /// `skip_os_ms` (with `SkipOsShutdown`), as on AWS.
    pub fn start_slow(upstream: &str, stop_ms: u64, skip_os_ms: u64) -> Ec2Proxy {
        Self::start_on(upstream, "127.0.0.1", stop_ms, skip_os_ms)
    }

    /// The same, listening on `bind`.
    pub fn start_on(upstream: &str, bind: &str, stop_ms: u64, skip_os_ms: u64) -> Ec2Proxy {
        let mut cmd = python(None);
        cmd.arg(support("ec2_proxy.py")).args([
            "--upstream",
            upstream,
            "--bind",
            bind,
            "--port",
            "0",
            "--stop-ms",
            &stop_ms.to_string(),
            "--stop-skip-os-ms",
            &skip_os_ms.to_string(),
        ]);
        // The AWS-like EC2 of issue 32 (per-call latency, filtered reads up
        // to 2 s stale), for runs that ask for it; not yet the rig's default.
        if std::env::var_os("CHAINWATCH_RIG_AWS_EC2").is_some() {
            cmd.args(["--latency", "--stale-ms", "2000"]);
        }
        let (proc, endpoint) = spawn_listening(cmd);
        Ec2Proxy { proc, endpoint }
    }

    /// Every StopInstances the proxy saw: instances, force, skip_os_shutdown.
    pub fn stops(&self) -> Vec<serde_json::Value> {
        self.record("stops")
    }

    /// Every `PutLogEvents` CloudWatch Logs acknowledged through the proxy:
    /// when (`at_ms`) and the request (`body`).
    #[allow(dead_code)] // used by the benchmarks
    pub fn log_puts(&self) -> Vec<serde_json::Value> {
        self.record("logs")
    }

    fn record(&self, key: &str) -> Vec<serde_json::Value> {
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen('{}/_stops').read().decode())",
                self.endpoint
            ))
            .output()
            .expect("python3 runs");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("records are JSON");
        v[key].as_array().cloned().unwrap_or_default()
    }

    /// Switch mode: pass, fail, hang, lose, failtags, stall, denystop.
    pub fn mode(&self, mode: &str) {
        let out = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import urllib.request;urllib.request.urlopen(urllib.request.Request('{}/_mode?m={mode}', data=b'', method='POST'))",
                self.endpoint
            ))
            .status()
            .expect("python3 runs");
        assert!(out.success());
    }
}

/// An EC2 client for `endpoint` with test credentials.
pub async fn ec2_client(endpoint: &str) -> aws_sdk_ec2::Client {
    let config = aws_test_config(endpoint)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(3))
                .build(),
        )
        .load()
        .await;
    aws_sdk_ec2::Client::new(&config)
}

/// The tags an instance of `fleet` holding `slot` is launched with (the
/// only time fleet and role are written), plus `extra`.
pub fn fleet_tags(
    fleet: &str,
    slot: chainwatch::layout::Slot,
    extra: &[(&str, &str)],
) -> aws_sdk_ec2::types::TagSpecification {
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    use chainwatch::shell::aws::ec2::tags;
    let id = slot.id.to_string();
    let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
    for (k, v) in [
        (tags::FLEET, fleet),
        (tags::ROLE, slot.role.as_str()),
        (tags::ID, id.as_str()),
        (tags::STATE, "active"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        spec = spec.tags(Tag::builder().key(k).value(v).build());
    }
    spec.build()
}

/// Launch an instance tagged as `slot` of `fleet`; returns its ID.
pub async fn launch(
    ec2: &aws_sdk_ec2::Client,
    fleet: &str,
    slot: chainwatch::layout::Slot,
    extra: &[(&str, &str)],
) -> String {
    let spec = fleet_tags(fleet, slot, extra);
    let out = ec2
        .run_instances()
        .image_id("ami-12c6146b")
        .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
        .min_count(1)
        .max_count(1)
        .tag_specifications(spec)
        .send()
        .await
        .expect("moto launches an instance");
    out.instances()[0].instance_id().unwrap().to_string()
}

/// Poll `cond` every 100 ms for up to `limit`: how long until it first
/// held, or `None` (for scenarios that measure, and report, a heal time).
#[allow(dead_code)] // not every rig binary measures
pub fn time_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Poll `f` until it returns `Some`, or panic after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A transition event for tests.
pub fn event(
    role: chainwatch::layout::Role,
    from_id: u32,
    to_id: u32,
    epoch: u64,
    instance: &str,
    fenced: &[&str],
) -> chainwatch::event::TransitionEvent {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let layout = chainwatch::layout::Layout::default();
    chainwatch::event::TransitionEvent {
        schema: chainwatch::event::SCHEMA,
        event_id: uuid::Uuid::new_v4().to_string(),
        fleet: "test".into(),
        role,
        from_id,
        to_id,
        instance_id: instance.into(),
        fenced_instances: fenced.iter().map(|s| s.to_string()).collect(),
        vacant: fenced.is_empty(),
        overlay_addr: layout.overlay_addr(chainwatch::layout::Slot::new(role, to_id)),
        epoch,
        timings: chainwatch::event::Timings {
            silent_since_ms: Some(now - 4000),
            detected_ms: now - 1200,
            fenced_ms: now - 900,
            identity_up_ms: now - 100,
            announced_ms: now,
        },
    }
}

/// An `[announce]` config for a test broker (no CloudWatch).
pub fn announce_config(urls: Vec<String>) -> chainwatch::config::AnnounceConfig {
    chainwatch::config::AnnounceConfig {
        rabbitmq_urls: urls,
        cloudwatch_log_group: String::new(),
        timeout: Duration::from_millis(5000),
        ..Default::default()
    }
}

/// The rig's prerequisites (root, iproute2, ping, openvpn, openssl, moto;
/// with `full`, RabbitMQ, MariaDB and Ansible too).
pub fn rig_ready(full: bool) -> bool {
    let base = is_root()
        && have("ip")
        && have("ping")
        && have("openvpn")
        && have("openssl")
        && Moto::available();
    let more = !full
        || (rabbit::Rabbit::available()
            && mariadb::Mariadb::available()
            && have("ansible-playbook"));
    prerequisite(
        base && more,
        "root, iproute2, ping, openvpn, openssl, moto, RabbitMQ, MariaDB and Ansible (.ci/run installs them)",
    )
}
